package agentapi

// Hooks for the external tests in package agentapi_test. They run what
// Run runs on its tickers, so tests need not wait a minute for the CA
// maintenance tick.

// MaintainCA runs one round of the CA maintenance that Run does every
// minute: rotation on the CA's clock, bundle broadcast, serving SVID
// renewal.
func (s *Server) MaintainCA() { s.maintainCA() }

// OpenStreams returns the number of agent streams the server tracks for
// revocation.
func (s *Server) OpenStreams() int { return s.streams.count() }
