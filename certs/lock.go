package certs

// LockFileName is the file in a directory that LockDir locks. It is hidden,
// so the CA and the signer, which refuse files their state does not list,
// pass it over, and it is never deleted: removing a lock file while another
// process waits on it would let two processes hold "the" lock at once.
const LockFileName = ".lock"
