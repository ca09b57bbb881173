// Package sign is the format and the verification side of Cairn's signed
// configuration deltas. The control plane streams changes to agents as
// DSSE-style envelopes signed with Ed25519 signing keys; agents learn those
// keys from a key set that the root key signs, and get the root's public key
// at enrollment.
//
// Agents link this package. It must stay standard library only and must not
// import the control plane's key custody (certs/signer), the CA (certs/ca) or
// anything under controlplane/. Nothing here stores private keys:
// SignEnvelope uses the key its caller holds.
package sign

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"
)

// Limits on what UnmarshalEnvelope and UpdateKeySet accept, so that a peer
// cannot make a verifier do unbounded work.
const (
	// MaxEnvelopeSize is the largest JSON envelope UnmarshalEnvelope reads.
	MaxEnvelopeSize = 4 << 20
	// MaxSignatures is the most signatures an envelope may carry.
	MaxSignatures = 8
	// MaxKeys is the most keys a key set may hold.
	MaxKeys = 32
)

// Envelope is a DSSE-style signed message: the exact payload bytes, its
// type, and signatures with key ids. Every signature is over
// PAE(PayloadType, Payload), so the type is authenticated along with the
// payload.
type Envelope struct {
	PayloadType string      `json:"payloadType"`
	Payload     []byte      `json:"payload"`
	Signatures  []Signature `json:"signatures"`
}

// Signature is one Ed25519 signature. KeyID only says which key to try; it
// is not authenticated, and a signature counts only if it verifies under the
// key so named.
type Signature struct {
	KeyID string `json:"keyid"`
	Sig   []byte `json:"sig"`
}

// PAE is DSSE's pre-authentication encoding of a payload and its type:
//
//	"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body
//
// where SP is one space and LEN is the byte count in ASCII decimal. The
// lengths make the encoding unambiguous, so no choice of type and payload
// signs the same bytes as another.
func PAE(payloadType string, payload []byte) []byte {
	const prefix = "DSSEv1 "
	b := make([]byte, 0, len(prefix)+len(payloadType)+len(payload)+2*20+3)
	b = append(b, prefix...)
	b = strconv.AppendInt(b, int64(len(payloadType)), 10)
	b = append(b, ' ')
	b = append(b, payloadType...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(len(payload)), 10)
	b = append(b, ' ')
	return append(b, payload...)
}

// KeyID names an Ed25519 public key: the lowercase hex of the first 16 bytes
// of the SHA-256 of the raw 32-byte key, 32 hex digits.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:16])
}

// SignEnvelope signs PAE(payloadType, payload) with key and returns an
// envelope with that one signature. The envelope holds a copy of payload.
func SignEnvelope(payloadType string, payload []byte, key ed25519.PrivateKey) Envelope {
	pub := key.Public().(ed25519.PublicKey)
	return Envelope{
		PayloadType: payloadType,
		Payload:     bytes.Clone(payload),
		Signatures: []Signature{{
			KeyID: KeyID(pub),
			Sig:   ed25519.Sign(key, PAE(payloadType, payload)),
		}},
	}
}

// MarshalEnvelope encodes env as JSON, with payload and signatures in
// standard base64. It refuses, with ErrMalformed, an envelope that
// UnmarshalEnvelope would refuse, so what one side sends the other reads.
func MarshalEnvelope(env Envelope) ([]byte, error) {
	if err := checkEnvelope(env); err != nil {
		return nil, fmt.Errorf("marshal envelope: %w", err)
	}
	if env.Payload == nil {
		// encoding/json writes a nil slice as null, which
		// UnmarshalEnvelope refuses; the signature does not tell them
		// apart.
		env.Payload = []byte{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// HTML escaping would only make the payload type longer.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(env); err != nil {
		return nil, fmt.Errorf("marshal envelope: %w", err)
	}
	data := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if len(data) > MaxEnvelopeSize {
		return nil, fmt.Errorf("marshal envelope: %w: %d bytes, more than %d", ErrMalformed, len(data), MaxEnvelopeSize)
	}
	return data, nil
}

// UnmarshalEnvelope decodes an envelope written by MarshalEnvelope. Beyond
// what encoding/json checks it refuses input over MaxEnvelopeSize, unknown
// or repeated members, member names in another case (encoding/json would
// fold them), null where a value is required, data after the envelope, an
// empty payload type, no signatures or more than MaxSignatures, and a
// signature that is not 64 bytes. All errors wrap ErrMalformed.
//
// It checks only the form; Verifier.Verify checks the signatures.
func UnmarshalEnvelope(data []byte) (Envelope, error) {
	if len(data) > MaxEnvelopeSize {
		return Envelope{}, fmt.Errorf("unmarshal envelope: %w: %d bytes, more than %d", ErrMalformed, len(data), MaxEnvelopeSize)
	}
	if err := checkShape(data); err != nil {
		return Envelope{}, fmt.Errorf("unmarshal envelope: %w: %w", ErrMalformed, err)
	}
	var env Envelope
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		return Envelope{}, fmt.Errorf("unmarshal envelope: %w: %w", ErrMalformed, err)
	}
	if err := checkEnvelope(env); err != nil {
		return Envelope{}, fmt.Errorf("unmarshal envelope: %w", err)
	}
	return env, nil
}

// checkEnvelope checks the limits shared by MarshalEnvelope and
// UnmarshalEnvelope.
func checkEnvelope(env Envelope) error {
	if env.PayloadType == "" {
		return fmt.Errorf("%w: empty payload type", ErrMalformed)
	}
	// encoding/json replaces invalid UTF-8 with U+FFFD, which would change
	// the signed type on the way through.
	if !utf8.ValidString(env.PayloadType) {
		return fmt.Errorf("%w: payload type is not UTF-8", ErrMalformed)
	}
	if n := len(env.Signatures); n == 0 || n > MaxSignatures {
		return fmt.Errorf("%w: %d signatures; want 1 to %d", ErrMalformed, n, MaxSignatures)
	}
	for i, s := range env.Signatures {
		if len(s.Sig) != ed25519.SignatureSize {
			return fmt.Errorf("%w: signature %d is %d bytes; want %d", ErrMalformed, i, len(s.Sig), ed25519.SignatureSize)
		}
		if !utf8.ValidString(s.KeyID) {
			return fmt.Errorf("%w: key id of signature %d is not UTF-8", ErrMalformed, i)
		}
	}
	return nil
}

// checkShape walks the JSON tokens of an envelope and checks what
// encoding/json lets through: it matches member names case-insensitively,
// keeps the last of repeated members, and accepts null for any value. Two
// readers of the same bytes must not disagree on what they say.
func checkShape(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	err := object(dec, []string{"payloadType", "payload", "signatures"}, func(name string) error {
		if name != "signatures" {
			return scalar(dec, name)
		}
		if err := delim(dec, '['); err != nil {
			return fmt.Errorf("signatures: %w", err)
		}
		n := 0
		for dec.More() {
			if n++; n > MaxSignatures {
				return fmt.Errorf("more than %d signatures", MaxSignatures)
			}
			if err := object(dec, []string{"keyid", "sig"}, func(name string) error {
				return scalar(dec, name)
			}); err != nil {
				return fmt.Errorf("signature %d: %w", n-1, err)
			}
		}
		return delim(dec, ']')
	})
	if err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the envelope")
	}
	return nil
}

// object reads a JSON object whose members are exactly names, each once, in
// any order, calling value to read each member's value.
func object(dec *json.Decoder, names []string, value func(name string) error) error {
	if err := delim(dec, '{'); err != nil {
		return err
	}
	seen := make(map[string]bool, len(names))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		name, _ := tok.(string)
		known := false
		for _, n := range names {
			known = known || n == name
		}
		if !known {
			return fmt.Errorf("unknown member %q", name)
		}
		if seen[name] {
			return fmt.Errorf("member %q repeated", name)
		}
		seen[name] = true
		if err := value(name); err != nil {
			return err
		}
	}
	for _, n := range names {
		if !seen[n] {
			return fmt.Errorf("member %q missing", n)
		}
	}
	return delim(dec, '}')
}

// scalar reads a value that must be a string; the envelope has no others.
func scalar(dec *json.Decoder, name string) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if _, ok := tok.(string); !ok {
		return fmt.Errorf("member %q is not a string", name)
	}
	return nil
}

func delim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok != want {
		return fmt.Errorf("got %v; want %v", tok, want)
	}
	return nil
}
