package adminapi

import (
	"encoding/base64"
	"errors"
	"fmt"
	"mime"
	"regexp"
	"strings"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"golang.org/x/mod/semver"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/cairnhq/cairn/controlplane/internal/fielderr"
	"github.com/cairnhq/cairn/controlplane/internal/selector"
	"github.com/cairnhq/cairn/controlplane/internal/store"
)

// Limits on request fields.
const (
	defaultPageSize   = 100
	maxPageSize       = 1000
	maxDisplayName    = 200
	maxDescription    = 200
	maxKind           = 253
	maxContentBytes   = 1 << 20
	maxPropertiesJSON = 64 << 10
)

var (
	dnsLabel   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	regionRE   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	kindRE     = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$`)
	errInvalid = errors.New("invalid request")
)

// violations collects field violations; err turns them into one
// InvalidArgument error with a google.rpc.BadRequest detail.
type violations []*errdetails.BadRequest_FieldViolation

func (v *violations) add(field, format string, args ...any) {
	*v = append(*v, &errdetails.BadRequest_FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
}

func (v violations) err() error {
	if len(v) == 0 {
		return nil
	}
	msgs := make([]string, len(v))
	for i, fv := range v {
		msgs[i] = fv.Field + ": " + fv.Description
	}
	ce := connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%w: %s", errInvalid, strings.Join(msgs, "; ")))
	if d, err := connect.NewErrorDetail(&errdetails.BadRequest{FieldViolations: v}); err == nil {
		ce.AddDetail(d)
	}
	return ce
}

func (v *violations) name(field, s string) {
	switch {
	case s == "":
		v.add(field, "required")
	case !dnsLabel.MatchString(s):
		v.add(field, "must be a DNS label: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit")
	}
}

// optionalName is name for a field that may be empty.
func (v *violations) optionalName(field, s string) {
	if s != "" {
		v.name(field, s)
	}
}

func (v *violations) id(field, s string) {
	switch {
	case s == "":
		v.add(field, "required")
	case !isUUID(s):
		v.add(field, "must be a UUID")
	}
}

func (v *violations) optionalID(field, s string) {
	if s != "" && !isUUID(s) {
		v.add(field, "must be a UUID")
	}
}

// isUUID accepts only the canonical form (lowercase, hyphenated) that the
// server hands out, so every backend compares ids the same way.
func isUUID(s string) bool {
	u, err := uuid.Parse(s)
	return err == nil && u.String() == s
}

func (v *violations) labels(field string, m map[string]string) {
	if err := selector.ValidateLabels(m); err != nil {
		v.add(field, "%v", err)
	}
}

func (v *violations) maxLen(field, s string, n int) {
	if len(s) > n {
		v.add(field, "must be at most %d bytes", n)
	}
}

// fullVersion is MAJOR.MINOR.PATCH with optional pre-release and build;
// semver.IsValid alone also takes the shorthands "1" and "1.2".
var fullVersion = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+([-+].*)?$`)

func (v *violations) version(field, s string) {
	if s != "" && (!fullVersion.MatchString(s) || !semver.IsValid("v"+s)) {
		v.add(field, "must be a semantic version MAJOR.MINOR.PATCH without a leading v, e.g. 1.4.2")
	}
}

func (v *violations) mediaType(field, s string) {
	if s == "" {
		v.add(field, "required")
		return
	}
	if mt, _, err := mime.ParseMediaType(s); err != nil || !strings.Contains(mt, "/") {
		v.add(field, "must be a media type type/subtype, e.g. application/yaml")
	}
}

func (v *violations) kind(field, s string) {
	switch {
	case s == "":
		v.add(field, "required")
	case len(s) > maxKind || !kindRE.MatchString(s):
		v.add(field, "must be 1-253 letters, digits, '.', '-', '_' or '/', starting and ending with a letter or digit")
	}
}

// fieldErrors adds err's field errors (fielderr), each field under prefix,
// and reports whether err had any.
func (v *violations) fieldErrors(prefix string, err error) bool {
	var fes fielderr.FieldErrors
	if !errors.As(err, &fes) {
		return false
	}
	for _, fe := range fes {
		v.add(prefix+fe.Field, "%s", fe.Reason)
	}
	return true
}

// listArgs validates the paging and selector fields shared by List calls.
func (v *violations) listArgs(pageSize int32, pageToken, labelSelector string) (store.Page, selector.Selector) {
	var p store.Page
	switch {
	case pageSize < 0:
		v.add("page_size", "must not be negative")
	case pageSize == 0:
		p.Size = defaultPageSize
	default:
		p.Size = min(int(pageSize), maxPageSize)
	}
	if pageToken != "" {
		b, err := base64.RawURLEncoding.DecodeString(pageToken)
		if err != nil || len(b) == 0 {
			v.add("page_token", "not a page token from this API")
		}
		p.After = string(b)
	}
	sel, err := selector.Parse(labelSelector)
	if err != nil {
		v.add("label_selector", "%v", err)
	}
	return p, sel
}

func pageToken(next string) string {
	if next == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(next))
}

// mask validates an update mask against the mutable fields and returns
// the set of fields to change; an empty mask means all of them.
func (v *violations) mask(m *fieldmaskpb.FieldMask, mutable ...string) map[string]bool {
	out := map[string]bool{}
	if len(m.GetPaths()) == 0 {
		for _, f := range mutable {
			out[f] = true
		}
		return out
	}
	for _, p := range m.GetPaths() {
		ok := false
		for _, f := range mutable {
			ok = ok || p == f
		}
		if !ok {
			v.add("update_mask", "%q is not a mutable field; mutable: %s", p, strings.Join(mutable, ", "))
			continue
		}
		out[p] = true
	}
	return out
}
