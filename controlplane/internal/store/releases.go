package store

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/cairnhq/cairn/controlplane/internal/versions"
)

// Release states, as the admin API's ReleaseState values.
const (
	ReleaseCandidate  int32 = 1
	ReleaseStable     int32 = 2
	ReleaseDeprecated int32 = 3
	ReleaseBlocked    int32 = 4
)

// Release is one version of a product in the catalog.
type Release struct {
	ID      string `json:"id"`
	Product string `json:"product"`
	// Version is strict semver; validated by the caller.
	Version     string       `json:"version"`
	State       int32        `json:"state"`
	Notes       string       `json:"notes"`
	Constraints []Constraint `json:"constraints"`
	Etag        string       `json:"etag"`
	CreateTime  time.Time    `json:"create_time"`
	UpdateTime  time.Time    `json:"update_time"`
}

// Constraint says which versions of a component a release needs, e.g.
// {"host", ">3.4"}.
type Constraint struct {
	Component string `json:"component"`
	Range     string `json:"range"`
}

// Channel is a release channel of a product with default versions per
// plan; the plan "" is the fallback.
type Channel struct {
	ID         string            `json:"id"`
	Product    string            `json:"product"`
	Name       string            `json:"name"`
	Defaults   map[string]string `json:"defaults"`
	Etag       string            `json:"etag"`
	CreateTime time.Time         `json:"create_time"`
	UpdateTime time.Time         `json:"update_time"`
}

const releaseCols = `t.id, t.product, t.version, t.state, t.notes, t.constraints, t.etag, t.create_time, t.update_time`

func scanRelease(r row) (Release, error) {
	var rel Release
	var cons string
	if err := r.Scan(&rel.ID, &rel.Product, &rel.Version, &rel.State, &rel.Notes, &cons, &rel.Etag, &rel.CreateTime, &rel.UpdateTime); err != nil {
		return Release{}, err
	}
	rel.CreateTime, rel.UpdateTime = utc(rel.CreateTime), utc(rel.UpdateTime)
	if err := json.Unmarshal([]byte(cons), &rel.Constraints); err != nil {
		return Release{}, fmt.Errorf("decode constraints: %w", err)
	}
	return rel, nil
}

func versionKey(v string) (string, error) {
	pv, err := versions.Parse(v)
	if err != nil {
		return "", err // the API validates versions; this is a caller bug
	}
	return pv.SortKey(), nil
}

// CreateRelease adds a release to the catalog; a product's version is
// unique.
func (s *Store) CreateRelease(ctx context.Context, a Actor, rel Release) (Release, error) {
	key, err := versionKey(rel.Version)
	if err != nil {
		return Release{}, fmt.Errorf("create release: %w", err)
	}
	now := s.now()
	rel.ID, rel.Etag, rel.CreateTime, rel.UpdateTime = newID(), newEtag(), now, now
	rel.Constraints = nonNilSlice(rel.Constraints)
	cons, _ := json.Marshal(rel.Constraints)
	err = s.inTx(ctx, func(q querier) error {
		_, err := q.exec(ctx, `INSERT INTO releases (id, product, version, version_key, state, notes, constraints, etag, create_time, update_time)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			rel.ID, rel.Product, rel.Version, key, rel.State, rel.Notes, string(cons), rel.Etag, rel.CreateTime, rel.UpdateTime)
		if isUniqueViolation(err) {
			return fmt.Errorf("release %s %s: %w", rel.Product, rel.Version, ErrAlreadyExists)
		}
		if err != nil {
			return err
		}
		return s.audit(ctx, q, a, "release.create", "release", rel.ID, "", nil, rel)
	})
	if err != nil {
		return Release{}, fmt.Errorf("create release: %w", err)
	}
	return rel, nil
}

func getRelease(ctx context.Context, q querier, product, version string) (Release, error) {
	rel, err := scanRelease(q.queryRow(ctx, `SELECT `+releaseCols+` FROM releases t WHERE t.product = $1 AND t.version = $2`, product, version))
	if isNoRows(err) {
		return Release{}, fmt.Errorf("release %s %s: %w", product, version, ErrNotFound)
	}
	return rel, err
}

// GetRelease returns one release by product and version.
func (s *Store) GetRelease(ctx context.Context, product, version string) (Release, error) {
	var rel Release
	err := s.b.read(ctx, func(q querier) (err error) {
		rel, err = getRelease(ctx, q, product, version)
		return err
	})
	if err != nil {
		return Release{}, fmt.Errorf("get release: %w", err)
	}
	return rel, nil
}

// ReleaseFilter narrows ListReleases.
type ReleaseFilter struct {
	// Product is required.
	Product string
	// States keeps releases in these states; empty keeps all.
	States []int32
}

// ListReleases returns a product's releases, newest version first.
func (s *Store) ListReleases(ctx context.Context, f ReleaseFilter) ([]Release, error) {
	var w where
	w.add("t.product = " + w.arg(f.Product))
	if len(f.States) > 0 {
		w.add(in(&w, "t.state", f.States))
	}
	var out []Release
	err := s.b.read(ctx, func(q querier) (err error) {
		out, err = queryAll(ctx, q, scanRelease, `SELECT `+releaseCols+` FROM releases t`+w.String()+` ORDER BY t.version_key DESC`, w.args...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list releases: %w", err)
	}
	return out, nil
}

// UpdateRelease applies mutate (which may change State, Notes and
// Constraints) to the current release; a non-empty etag must match.
func (s *Store) UpdateRelease(ctx context.Context, a Actor, product, version, etag string, mutate func(*Release) error) (Release, error) {
	var out Release
	err := s.inTx(ctx, func(q querier) error {
		old, err := getRelease(ctx, q, product, version)
		if err != nil {
			return err
		}
		if etag != "" && etag != old.Etag {
			return fmt.Errorf("release %s %s: %w", product, version, ErrEtagMismatch)
		}
		rel := old
		rel.Constraints = slices.Clone(old.Constraints)
		if err := mutate(&rel); err != nil {
			return err
		}
		rel.ID, rel.Product, rel.Version, rel.CreateTime = old.ID, old.Product, old.Version, old.CreateTime
		rel.Etag, rel.UpdateTime = newEtag(), s.now()
		rel.Constraints = nonNilSlice(rel.Constraints)
		cons, _ := json.Marshal(rel.Constraints)
		if _, err := q.exec(ctx, `UPDATE releases SET state = $2, notes = $3, constraints = $4, etag = $5, update_time = $6 WHERE id = $1`,
			rel.ID, rel.State, rel.Notes, string(cons), rel.Etag, rel.UpdateTime); err != nil {
			return err
		}
		out = rel
		return s.audit(ctx, q, a, "release.update", "release", rel.ID, "", old, rel)
	})
	if err != nil {
		return Release{}, fmt.Errorf("update release: %w", err)
	}
	return out, nil
}

const channelCols = `t.id, t.product, t.name, t.defaults, t.etag, t.create_time, t.update_time`

func scanChannel(r row) (Channel, error) {
	var c Channel
	var defaults string
	if err := r.Scan(&c.ID, &c.Product, &c.Name, &defaults, &c.Etag, &c.CreateTime, &c.UpdateTime); err != nil {
		return Channel{}, err
	}
	c.CreateTime, c.UpdateTime = utc(c.CreateTime), utc(c.UpdateTime)
	var err error
	c.Defaults, err = decodeLabels(defaults)
	return c, err
}

// checkDefaults refuses defaults naming a release that is not in the
// catalog or is blocked: a new cluster must never start on one.
func checkDefaults(ctx context.Context, q querier, product string, defaults map[string]string) error {
	for plan, v := range defaults {
		rel, err := getRelease(ctx, q, product, v)
		if err != nil {
			return fmt.Errorf("default for plan %q: %w", plan, err)
		}
		if rel.State == ReleaseBlocked {
			return fmt.Errorf("default for plan %q: release %s is blocked: %w", plan, v, ErrFailedPrecondition)
		}
	}
	return nil
}

// CreateChannel adds a channel; each default must name a release of the
// product that is not blocked.
func (s *Store) CreateChannel(ctx context.Context, a Actor, c Channel) (Channel, error) {
	now := s.now()
	c.ID, c.Etag, c.CreateTime, c.UpdateTime = newID(), newEtag(), now, now
	c.Defaults = nonNil(c.Defaults)
	err := s.inTx(ctx, func(q querier) error {
		if err := checkDefaults(ctx, q, c.Product, c.Defaults); err != nil {
			return err
		}
		_, err := q.exec(ctx, `INSERT INTO channels (id, product, name, defaults, etag, create_time, update_time)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, c.ID, c.Product, c.Name, encodeLabels(c.Defaults), c.Etag, c.CreateTime, c.UpdateTime)
		if isUniqueViolation(err) {
			return fmt.Errorf("channel %s of %s: %w", c.Name, c.Product, ErrAlreadyExists)
		}
		if err != nil {
			return err
		}
		return s.audit(ctx, q, a, "channel.create", "channel", c.ID, "", nil, c)
	})
	if err != nil {
		return Channel{}, fmt.Errorf("create channel: %w", err)
	}
	return c, nil
}

func getChannel(ctx context.Context, q querier, product, name string) (Channel, error) {
	c, err := scanChannel(q.queryRow(ctx, `SELECT `+channelCols+` FROM channels t WHERE t.product = $1 AND t.name = $2`, product, name))
	if isNoRows(err) {
		return Channel{}, fmt.Errorf("channel %s of %s: %w", name, product, ErrNotFound)
	}
	return c, err
}

// GetChannel returns one channel.
func (s *Store) GetChannel(ctx context.Context, product, name string) (Channel, error) {
	var c Channel
	err := s.b.read(ctx, func(q querier) (err error) {
		c, err = getChannel(ctx, q, product, name)
		return err
	})
	if err != nil {
		return Channel{}, fmt.Errorf("get channel: %w", err)
	}
	return c, nil
}

// ListChannels returns a product's channels by name.
func (s *Store) ListChannels(ctx context.Context, product string) ([]Channel, error) {
	var out []Channel
	err := s.b.read(ctx, func(q querier) (err error) {
		out, err = queryAll(ctx, q, scanChannel, `SELECT `+channelCols+` FROM channels t WHERE t.product = $1 ORDER BY t.name`, product)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list channels: %w", err)
	}
	return out, nil
}

// SetChannelDefaults replaces a channel's defaults (audited with the old
// and new ones). It changes no cluster: defaults apply to clusters created
// afterwards.
func (s *Store) SetChannelDefaults(ctx context.Context, a Actor, product, name, etag string, defaults map[string]string) (Channel, error) {
	var out Channel
	err := s.inTx(ctx, func(q querier) error {
		old, err := getChannel(ctx, q, product, name)
		if err != nil {
			return err
		}
		if etag != "" && etag != old.Etag {
			return fmt.Errorf("channel %s of %s: %w", name, product, ErrEtagMismatch)
		}
		if err := checkDefaults(ctx, q, product, defaults); err != nil {
			return err
		}
		c := old
		c.Defaults = nonNil(maps.Clone(defaults))
		c.Etag, c.UpdateTime = newEtag(), s.now()
		if _, err := q.exec(ctx, `UPDATE channels SET defaults = $2, etag = $3, update_time = $4 WHERE id = $1`,
			c.ID, encodeLabels(c.Defaults), c.Etag, c.UpdateTime); err != nil {
			return err
		}
		out = c
		return s.audit(ctx, q, a, "channel.update", "channel", c.ID, "", old, c)
	})
	if err != nil {
		return Channel{}, fmt.Errorf("set channel defaults: %w", err)
	}
	return out, nil
}

// DefaultVersion is the version a new cluster of plan on the channel
// starts on: the plan's default, else the fallback (plan ""); "" when the
// channel has neither.
func (c Channel) DefaultVersion(plan string) string {
	if v, ok := c.Defaults[plan]; ok {
		return v
	}
	return c.Defaults[""]
}
