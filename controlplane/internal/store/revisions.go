package store

import (
	"context"
	"fmt"
	"time"

	"github.com/cairnhq/cairn/internal/configstate"
)

// Revision operations.
const (
	OpPut    = "put"
	OpDelete = "delete"
)

// Revision is one entry of a data plane's config revision log: a document
// written (put, with its new content) or deleted.
type Revision struct {
	DataPlaneID string
	Revision    int64
	Op          string
	DocumentID  string
	ScopeType   string
	ScopeID     string
	Kind        string
	Name        string
	// Version, Content, MediaType, Structured and Labels are the document
	// after a put; for a delete, Version is the deleted version and the
	// rest is empty.
	Version    int64
	Content    []byte
	MediaType  string
	Structured bool
	Labels     map[string]string
	// PrevStateHash and StateHash are the configstate hashes of the data
	// plane's documents before and after this entry.
	PrevStateHash string
	StateHash     string
	CommitTime    time.Time
}

// Head is a data plane's latest revision.
type Head struct {
	DataPlaneID string
	Revision    int64
	StateHash   string
	// CompactedThrough: entries at or below it are gone from the log.
	CompactedThrough int64
	UpdateTime       time.Time
}

// createHead starts a new data plane's log at revision 0.
func (s *Store) createHead(ctx context.Context, q querier, dataPlaneID string) error {
	_, err := q.exec(ctx, `INSERT INTO data_plane_heads (data_plane_id, revision, state_hash, compacted_through, update_time)
		VALUES ($1, 0, $2, 0, $3)`, dataPlaneID, configstate.EmptyHash, s.now())
	return err
}

// stateHash computes a data plane's state hash from its documents as the
// transaction sees them.
func stateHash(ctx context.Context, q querier, dataPlaneID string) (string, error) {
	rs, err := q.query(ctx, `SELECT scope_type, scope_id, kind, name, version, media_type, content
		FROM config_documents WHERE data_plane_id = $1`, dataPlaneID)
	if err != nil {
		return "", err
	}
	defer rs.Close()
	var entries []configstate.Entry
	for rs.Next() {
		var scopeType, scopeID, kind, name string
		var e configstate.Entry
		if err := rs.Scan(&scopeType, &scopeID, &kind, &name, &e.Version, &e.MediaType, &e.Content); err != nil {
			return "", err
		}
		e.Key = configstate.Key(scopeType, scopeID, kind, name)
		entries = append(entries, e)
	}
	if err := rs.Err(); err != nil {
		return "", err
	}
	return configstate.Hash(entries), nil
}

// appendRevision records a document change that the transaction has
// already made. Bumping the head first takes its row lock, so writers of
// one data plane queue up and revisions stay gapless; the state hash is
// computed from the documents after the change.
func (s *Store) appendRevision(ctx context.Context, q querier, op string, d ConfigDocument) error {
	now := s.now()
	var rev int64
	var prev string
	err := q.queryRow(ctx, `UPDATE data_plane_heads SET revision = revision + 1, update_time = $2
		WHERE data_plane_id = $1 RETURNING revision, state_hash`, d.DataPlaneID, now).Scan(&rev, &prev)
	if err != nil {
		return fmt.Errorf("bump revision of data plane %s: %w", d.DataPlaneID, err)
	}
	next, err := stateHash(ctx, q, d.DataPlaneID)
	if err != nil {
		return fmt.Errorf("state hash: %w", err)
	}
	if _, err := q.exec(ctx, `UPDATE data_plane_heads SET state_hash = $2 WHERE data_plane_id = $1`, d.DataPlaneID, next); err != nil {
		return err
	}
	r := Revision{Op: op, Version: d.Version, Content: []byte{}, Labels: map[string]string{}}
	if op == OpPut {
		r.Content, r.MediaType, r.Structured, r.Labels = d.Content, d.MediaType, d.Structured, d.Labels
	}
	_, err = q.exec(ctx, `INSERT INTO config_revisions (data_plane_id, revision, op, document_id, scope_type, scope_id, kind, name,
		version, content, media_type, structured, labels, prev_state_hash, state_hash, commit_time)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
		d.DataPlaneID, rev, op, d.ID, d.ScopeType, d.ScopeID, d.Kind, d.Name,
		r.Version, r.Content, r.MediaType, r.Structured, encodeLabels(r.Labels), prev, next, now)
	if err != nil {
		return fmt.Errorf("append revision: %w", err)
	}
	noteRevision(q, d.DataPlaneID)
	return nil
}

const headCols = `t.data_plane_id, t.revision, t.state_hash, t.compacted_through, t.update_time`

func scanHead(r row) (Head, error) {
	var h Head
	err := r.Scan(&h.DataPlaneID, &h.Revision, &h.StateHash, &h.CompactedThrough, &h.UpdateTime)
	h.UpdateTime = utc(h.UpdateTime)
	return h, err
}

func getHead(ctx context.Context, q querier, dataPlaneID string) (Head, error) {
	h, err := scanHead(q.queryRow(ctx, `SELECT `+headCols+` FROM data_plane_heads t WHERE t.data_plane_id = $1`, dataPlaneID))
	if isNoRows(err) {
		return Head{}, fmt.Errorf("head of data plane %q: %w", dataPlaneID, ErrNotFound)
	}
	return h, err
}

// GetHead returns a data plane's latest revision.
func (s *Store) GetHead(ctx context.Context, dataPlaneID string) (Head, error) {
	if !isValidID(dataPlaneID) {
		return Head{}, fmt.Errorf("head of data plane %q: %w", dataPlaneID, ErrNotFound)
	}
	var h Head
	err := s.b.read(ctx, func(q querier) (err error) {
		h, err = getHead(ctx, q, dataPlaneID)
		return err
	})
	if err != nil {
		return Head{}, fmt.Errorf("get head: %w", err)
	}
	return h, nil
}

// HeadsChangedSince returns the heads updated at or after since, for the
// fan-out's polling; the caller keeps its own last-seen revision per data
// plane, so overlap is harmless.
func (s *Store) HeadsChangedSince(ctx context.Context, since time.Time) ([]Head, error) {
	var out []Head
	err := s.b.read(ctx, func(q querier) (err error) {
		out, err = queryAll(ctx, q, scanHead, `SELECT `+headCols+` FROM data_plane_heads t WHERE t.update_time >= $1`, since.UTC())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("changed heads: %w", err)
	}
	return out, nil
}

const revisionCols = `t.data_plane_id, t.revision, t.op, t.document_id, t.scope_type, t.scope_id, t.kind, t.name,
	t.version, t.content, t.media_type, t.structured, t.labels, t.prev_state_hash, t.state_hash, t.commit_time`

func scanRevision(r row) (Revision, error) {
	var v Revision
	var labels string
	if err := r.Scan(&v.DataPlaneID, &v.Revision, &v.Op, &v.DocumentID, &v.ScopeType, &v.ScopeID, &v.Kind, &v.Name,
		&v.Version, &v.Content, &v.MediaType, &v.Structured, &labels, &v.PrevStateHash, &v.StateHash, &v.CommitTime); err != nil {
		return Revision{}, err
	}
	v.CommitTime = utc(v.CommitTime)
	if v.Content == nil {
		v.Content = []byte{}
	}
	var err error
	v.Labels, err = decodeLabels(labels)
	return v, err
}

// RevisionsAfter returns up to limit log entries of a data plane with
// revision > after, in order. It fails with ErrCompacted when entries
// right after `after` are gone: the caller needs a snapshot.
func (s *Store) RevisionsAfter(ctx context.Context, dataPlaneID string, after int64, limit int) ([]Revision, error) {
	var out []Revision
	err := s.b.read(ctx, func(q querier) error {
		h, err := getHead(ctx, q, dataPlaneID)
		if err != nil {
			return err
		}
		if after < h.CompactedThrough {
			return fmt.Errorf("revision %d of data plane %s: %w (kept from %d)", after, dataPlaneID, ErrCompacted, h.CompactedThrough+1)
		}
		out, err = queryAll(ctx, q, scanRevision, `SELECT `+revisionCols+` FROM config_revisions t
			WHERE t.data_plane_id = $1 AND t.revision > $2 ORDER BY t.revision LIMIT $3`, dataPlaneID, after, max(limit, 1))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("revisions: %w", err)
	}
	return out, nil
}

// Snapshot is a data plane's whole config at one revision.
type Snapshot struct {
	Head      Head
	Documents []ConfigDocument
}

// GetSnapshot reads a data plane's documents and head in one transaction,
// so they belong to the same revision, and checks the stored state hash
// against the documents.
func (s *Store) GetSnapshot(ctx context.Context, dataPlaneID string) (Snapshot, error) {
	var snap Snapshot
	err := s.inTx(ctx, func(q querier) error {
		h, err := getHead(ctx, q, dataPlaneID)
		if err != nil {
			return err
		}
		docs, err := queryAll(ctx, q, scanConfig, `SELECT `+configCols+` FROM config_documents t WHERE t.data_plane_id = $1 ORDER BY t.id`, dataPlaneID)
		if err != nil {
			return err
		}
		entries := make([]configstate.Entry, len(docs))
		for i, d := range docs {
			entries[i] = configstate.Entry{Key: configstate.Key(d.ScopeType, d.ScopeID, d.Kind, d.Name),
				Version: d.Version, MediaType: d.MediaType, Content: d.Content}
		}
		if got := configstate.Hash(entries); got != h.StateHash {
			return fmt.Errorf("data plane %s: stored state hash %s does not match its documents (%s)", dataPlaneID, h.StateHash, got)
		}
		snap = Snapshot{Head: h, Documents: docs}
		return nil
	})
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot: %w", err)
	}
	return snap, nil
}

// CompactRevisions drops log entries of every data plane beyond the newest
// keep entries or older than maxAge (the newest entry always stays), and
// records how far each log was compacted. It returns how many entries it
// dropped.
func (s *Store) CompactRevisions(ctx context.Context, keep int64, maxAge time.Duration) (int64, error) {
	var heads []Head
	err := s.b.read(ctx, func(q querier) (err error) {
		heads, err = queryAll(ctx, q, scanHead, `SELECT `+headCols+` FROM data_plane_heads t WHERE t.revision - t.compacted_through > 0`)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("compact revisions: %w", err)
	}
	cutoff := s.now().Add(-maxAge)
	var dropped int64
	for _, h := range heads {
		err := s.inTx(ctx, func(q querier) error {
			// Through the older of: beyond the newest `keep`, or older
			// than maxAge; never the newest entry.
			through := h.Revision - keep
			var byAge int64
			if err := q.queryRow(ctx, `SELECT COALESCE(MAX(revision), 0) FROM config_revisions
				WHERE data_plane_id = $1 AND commit_time < $2`, h.DataPlaneID, cutoff).Scan(&byAge); err != nil {
				return err
			}
			through = min(max(through, byAge), h.Revision-1)
			if through <= h.CompactedThrough {
				return nil
			}
			n, err := q.exec(ctx, `DELETE FROM config_revisions WHERE data_plane_id = $1 AND revision <= $2`, h.DataPlaneID, through)
			if err != nil {
				return err
			}
			if _, err := q.exec(ctx, `UPDATE data_plane_heads SET compacted_through = $2 WHERE data_plane_id = $1 AND compacted_through < $2`,
				h.DataPlaneID, through); err != nil {
				return err
			}
			dropped += n
			return nil
		})
		if err != nil {
			return dropped, fmt.Errorf("compact revisions of %s: %w", h.DataPlaneID, err)
		}
	}
	return dropped, nil
}

// repairHeads fills in state hashes that a migration could not compute.
func (s *Store) repairHeads(ctx context.Context) error {
	var ids []string
	err := s.b.read(ctx, func(q querier) (err error) {
		ids, err = queryAll(ctx, q, scanString, `SELECT data_plane_id FROM data_plane_heads WHERE state_hash = ''`)
		return err
	})
	if err != nil {
		return fmt.Errorf("repair heads: %w", err)
	}
	for _, id := range ids {
		err := s.inTx(ctx, func(q querier) error {
			h, err := stateHash(ctx, q, id)
			if err != nil {
				return err
			}
			_, err = q.exec(ctx, `UPDATE data_plane_heads SET state_hash = $2, update_time = $3 WHERE data_plane_id = $1 AND state_hash = ''`, id, h, s.now())
			return err
		})
		if err != nil {
			return fmt.Errorf("repair head of %s: %w", id, err)
		}
	}
	return nil
}
