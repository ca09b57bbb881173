// Package certs is the part of Cairn's agent PKI that both sides need: the
// shape of an agent's SPIFFE ID, key and CSR generation, PEM encoding, the
// atomic file writes that keep a key on disk private, the directory lock
// that lets control-plane replicas share a key directory, and CA pins.
//
// The agent links this package, so it must not import the certificate
// authority (certs/ca) or anything under controlplane/; nothing here holds
// or can use a CA key.
package certs
