package sign_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/cairnhq/cairn/certs/sign"
)

func TestPAE(t *testing.T) {
	for _, tc := range []struct {
		name        string
		payloadType string
		payload     []byte
		want        string
	}{
		// The worked example in the DSSE protocol's test vectors
		// (secure-systems-lab/dsse protocol.md).
		{"DSSE spec example", "http://example.com/HelloWorld", []byte("hello world"), "DSSEv1 29 http://example.com/HelloWorld 11 hello world"},
		{"empty", "", nil, "DSSEv1 0  0 "},
		{"empty payload", "t", []byte{}, "DSSEv1 1 t 0 "},
		{"lengths count bytes, not runes", "ü", []byte("€"), "DSSEv1 2 ü 3 €"},
		{"spaces and binary", "a b", []byte{0, ' ', 0xff}, "DSSEv1 3 a b 3 \x00 \xff"},
		{"ten bytes", "0123456789", []byte("x"), "DSSEv1 10 0123456789 1 x"},
		{"keyset type", sign.KeySetPayloadType, []byte("{}"), "DSSEv1 33 application/vnd.cairn.keyset+json 2 {}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(sign.PAE(tc.payloadType, tc.payload)); got != tc.want {
				t.Errorf("got %q; want %q", got, tc.want)
			}
		})
	}
	// The lengths keep a space from moving between type and payload.
	if a, b := sign.PAE("a b", []byte("c")), sign.PAE("a", []byte("b c")); bytes.Equal(a, b) {
		t.Errorf("PAE(%q, %q) = PAE(%q, %q) = %q", "a b", "c", "a", "b c", a)
	}
	long := bytes.Repeat([]byte("x"), 12345)
	if got, want := sign.PAE("t", long), append([]byte("DSSEv1 1 t 12345 "), long...); !bytes.Equal(got, want) {
		t.Errorf("long payload: got prefix %q; want %q", got[:20], want[:20])
	}
}

func TestKeyID(t *testing.T) {
	// A fixed key, so a change to the id scheme shows up here.
	k := seedKey(0)
	sum := sha256.Sum256(k.pub)
	if got, want := sign.KeyID(k.pub), hex.EncodeToString(sum[:16]); got != want {
		t.Errorf("got %s; want %s", got, want)
	}
	seen := map[string]bool{}
	for range 20 {
		id := newKey(t).id
		if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(id) {
			t.Fatalf("got %q; want 32 lowercase hex digits", id)
		}
		if seen[id] {
			t.Fatalf("two keys have id %s", id)
		}
		seen[id] = true
	}
}

func TestSignEnvelope(t *testing.T) {
	k := newKey(t)
	payload := []byte(`{"op":"add"}`)
	env := sign.SignEnvelope(deltaType, payload, k.priv)
	if env.PayloadType != deltaType || !bytes.Equal(env.Payload, payload) {
		t.Errorf("got type %q payload %q; want %q %q", env.PayloadType, env.Payload, deltaType, payload)
	}
	if len(env.Signatures) != 1 {
		t.Fatalf("got %d signatures; want 1", len(env.Signatures))
	}
	s := env.Signatures[0]
	if s.KeyID != k.id {
		t.Errorf("key id: got %s; want %s", s.KeyID, k.id)
	}
	if !ed25519.Verify(k.pub, sign.PAE(deltaType, payload), s.Sig) {
		t.Errorf("signature does not verify over PAE")
	}
	// The envelope holds its own copy of the payload.
	payload[0] = 'X'
	if env.Payload[0] != '{' {
		t.Errorf("changing the caller's payload changed the envelope")
	}
}

func TestEnvelopeJSON(t *testing.T) {
	k := newKey(t)
	env := sign.SignEnvelope(deltaType, []byte("hello world"), k.priv)
	data, err := sign.MarshalEnvelope(env)
	if err != nil {
		t.Fatalf("MarshalEnvelope: %v", err)
	}
	want := fmt.Sprintf(`{"payloadType":%q,"payload":"aGVsbG8gd29ybGQ=","signatures":[{"keyid":%q,"sig":%q}]}`,
		deltaType, k.id, base64.StdEncoding.EncodeToString(env.Signatures[0].Sig))
	if string(data) != want {
		t.Errorf("got %s; want %s", data, want)
	}
	got, err := sign.UnmarshalEnvelope(data)
	if err != nil {
		t.Fatalf("UnmarshalEnvelope: %v", err)
	}
	checkSameEnvelope(t, got, env)

	// Member order and whitespace are free.
	reordered := fmt.Sprintf(" {\n \"signatures\" : [ {\"sig\":%q, \"keyid\":%q} ],\"payload\":\"aGVsbG8gd29ybGQ=\", \"payloadType\":%q}\n",
		base64.StdEncoding.EncodeToString(env.Signatures[0].Sig), k.id, deltaType)
	if got, err := sign.UnmarshalEnvelope([]byte(reordered)); err != nil {
		t.Errorf("reordered: %v", err)
	} else {
		checkSameEnvelope(t, got, env)
	}

	// An empty payload and an empty key id are well formed.
	env2 := sign.Envelope{PayloadType: "t", Payload: []byte{}, Signatures: []sign.Signature{{KeyID: "", Sig: make([]byte, 64)}}}
	data2, err := sign.MarshalEnvelope(env2)
	if err != nil {
		t.Fatalf("MarshalEnvelope(empty payload): %v", err)
	}
	if got, err := sign.UnmarshalEnvelope(data2); err != nil {
		t.Errorf("UnmarshalEnvelope(empty payload): %v", err)
	} else {
		checkSameEnvelope(t, got, env2)
	}

	// Exactly MaxEnvelopeSize is fine; whitespace counts.
	padded := append(bytes.Clone(data), bytes.Repeat([]byte(" "), sign.MaxEnvelopeSize-len(data))...)
	if _, err := sign.UnmarshalEnvelope(padded); err != nil {
		t.Errorf("MaxEnvelopeSize bytes: %v", err)
	}
	if _, err := sign.UnmarshalEnvelope(append(padded, ' ')); !errors.Is(err, sign.ErrMalformed) {
		t.Errorf("MaxEnvelopeSize+1 bytes: got %v; want ErrMalformed", err)
	}
}

func TestUnmarshalEnvelopeRejects(t *testing.T) {
	sig := base64.StdEncoding.EncodeToString(make([]byte, 64))
	sigObj := `{"keyid":"k","sig":"` + sig + `"}`
	good := `{"payloadType":"t","payload":"aGk=","signatures":[` + sigObj + `]}`
	if _, err := sign.UnmarshalEnvelope([]byte(good)); err != nil {
		t.Fatalf("the good envelope: %v", err)
	}
	// with replaces the first old in good.
	with := func(old, new string) string {
		if !strings.Contains(good, old) {
			t.Fatalf("%q not in the good envelope", old)
		}
		return strings.Replace(good, old, new, 1)
	}
	sigs := func(n int) string {
		return with(`[`+sigObj+`]`, `[`+strings.Repeat(sigObj+",", n-1)+sigObj+`]`)
	}
	for _, tc := range []struct {
		name string
		data string
	}{
		{"empty", ``},
		{"whitespace", " \n"},
		{"not JSON", `hello`},
		{"null", `null`},
		{"array", `[` + good + `]`},
		{"string", `"x"`},
		{"truncated", good[:len(good)-1]},
		{"trailing object", good + `{}`},
		{"trailing text", good + `x`},
		{"two envelopes", good + good},
		{"unknown member", with(`{"payloadType"`, `{"extra":1,"payloadType"`)},
		{"unknown member in signature", with(`{"keyid"`, `{"extra":"x","keyid"`)},
		{"member in other case", with(`"payloadType"`, `"PayloadType"`)},
		{"signature member in other case", with(`"keyid"`, `"KeyID"`)},
		{"repeated payload", with(`"payload":"aGk="`, `"payload":"aGk=","payload":"aGk="`)},
		{"repeated payload type", with(`"payloadType":"t"`, `"payloadType":"t","payloadType":"u"`)},
		{"repeated sig", with(`"sig":`, `"sig":"`+sig+`","sig":`)},
		{"missing payload", with(`"payload":"aGk=",`, ``)},
		{"missing payload type", with(`"payloadType":"t",`, ``)},
		{"missing signatures", with(`,"signatures":[`+sigObj+`]`, ``)},
		{"missing keyid", with(`"keyid":"k",`, ``)},
		{"missing sig", with(`,"sig":"`+sig+`"`, ``)},
		{"null payload", with(`"aGk="`, `null`)},
		{"null payload type", with(`"t"`, `null`)},
		{"null signatures", with(`[`+sigObj+`]`, `null`)},
		{"null signature", with(sigObj, `null`)},
		{"null sig", with(`"`+sig+`"`, `null`)},
		{"number payload type", with(`"t"`, `1`)},
		{"object payload", with(`"aGk="`, `{}`)},
		{"signatures object", with(`[`+sigObj+`]`, sigObj)},
		{"empty payload type", with(`"t"`, `""`)},
		{"payload not base64", with(`"aGk="`, `"a!"`)},
		{"payload URL-safe base64", with(`"aGk="`, `"-_-_"`)},
		{"sig not base64", with(`"`+sig+`"`, `"!!!!"`)},
		{"no signatures", with(`[`+sigObj+`]`, `[]`)},
		{"nine signatures", sigs(9)},
		{"many signatures", sigs(1000)},
		{"short sig", with(sig, base64.StdEncoding.EncodeToString(make([]byte, 63)))},
		{"long sig", with(sig, base64.StdEncoding.EncodeToString(make([]byte, 65)))},
		{"empty sig", with(`"`+sig+`"`, `""`)},
		{"too large", good + strings.Repeat(" ", sign.MaxEnvelopeSize)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, err := sign.UnmarshalEnvelope([]byte(tc.data))
			if !errors.Is(err, sign.ErrMalformed) {
				t.Errorf("got %+v, %v; want ErrMalformed", env, err)
			}
		})
	}
	if _, err := sign.UnmarshalEnvelope([]byte(sigs(8))); err != nil {
		t.Errorf("eight signatures: got %v; want nil error", err)
	}
}

func TestMarshalEnvelopeRejects(t *testing.T) {
	sig := make([]byte, 64)
	for _, tc := range []struct {
		name string
		env  sign.Envelope
	}{
		{"zero", sign.Envelope{}},
		{"empty payload type", sign.Envelope{Payload: []byte("x"), Signatures: []sign.Signature{{KeyID: "k", Sig: sig}}}},
		{"payload type not UTF-8", sign.Envelope{PayloadType: "t\xff", Signatures: []sign.Signature{{KeyID: "k", Sig: sig}}}},
		{"key id not UTF-8", sign.Envelope{PayloadType: "t", Signatures: []sign.Signature{{KeyID: "k\xff", Sig: sig}}}},
		{"no signatures", sign.Envelope{PayloadType: "t"}},
		{"nine signatures", sign.Envelope{PayloadType: "t", Signatures: make([]sign.Signature, 9)}},
		{"short sig", sign.Envelope{PayloadType: "t", Signatures: []sign.Signature{{KeyID: "k", Sig: sig[:63]}}}},
		{"too large", sign.Envelope{PayloadType: "t", Payload: make([]byte, sign.MaxEnvelopeSize), Signatures: []sign.Signature{{KeyID: "k", Sig: sig}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := sign.MarshalEnvelope(tc.env)
			if !errors.Is(err, sign.ErrMalformed) {
				t.Errorf("got %d bytes, %v; want ErrMalformed", len(data), err)
			}
		})
	}
}

// checkSameEnvelope compares envelopes by content; nil and empty payloads
// are the same.
func checkSameEnvelope(tb testing.TB, got, want sign.Envelope) {
	tb.Helper()
	g, err := json.Marshal(got)
	if err != nil {
		tb.Fatal(err)
	}
	w, err := json.Marshal(want)
	if err != nil {
		tb.Fatal(err)
	}
	if !bytes.Equal(g, w) {
		tb.Errorf("got %s; want %s", g, w)
	}
}
