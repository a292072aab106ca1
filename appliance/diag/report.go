package diag

import (
	"encoding/json"
	"time"
)

// Report is the federation tester's result. Its first fields have the
// names and shapes of matrix-federation-tester's /api/report, so tools and
// pages written for the public tester read it; Hearth's further checks sit
// beside them (Resolution, Outbound, Notaries, Findings).
type Report struct {
	// Error is a failure before any connection (an invalid server name).
	Error             string                      `json:"Error,omitempty"`
	WellKnownResult   WellKnownResult             `json:"WellKnownResult"`
	DNSResult         DNSResult                   `json:"DNSResult"`
	ConnectionReports map[string]ConnectionReport `json:"ConnectionReports"`
	ConnectionErrors  map[string]ReportError      `json:"ConnectionErrors"`
	Version           VersionReport               `json:"Version"`
	FederationOK      bool                        `json:"FederationOK"`

	// Hearth's additions.
	ServerName string            `json:"ServerName"`
	Resolution *ResolutionReport `json:"Resolution,omitempty"`
	Outbound   *OutboundReport   `json:"Outbound,omitempty"`
	Notaries   []NotaryReport    `json:"Notaries,omitempty"`
	Findings   []Finding         `json:"Findings"`
	// Verdict is one sentence for people.
	Verdict  string    `json:"Verdict"`
	TestedAt time.Time `json:"TestedAt"`
}

// WellKnownResult is the .well-known/matrix/server lookup.
type WellKnownResult struct {
	Server string `json:"m.server"`
	// CacheExpiresAt is when the answer may no longer be used (Unix s).
	CacheExpiresAt int64  `json:"CacheExpiresAt"`
	Result         string `json:"result,omitempty"`
}

// DNSResult is what DNS said about the (possibly delegated) host.
type DNSResult struct {
	// SRVSkipped: the name (or its delegation) had an IP literal or a
	// port, so the spec's steps look up no SRV record.
	SRVSkipped bool                  `json:"SRVSkipped"`
	SRVCName   string                `json:"SRVCName,omitempty"`
	SRVRecords []SRVRecord           `json:"SRVRecords"`
	SRVError   *ReportError          `json:"SRVError"`
	Hosts      map[string]HostResult `json:"Hosts"`
	// Addrs are the "ip:port" addresses federation would connect to.
	Addrs []string `json:"Addrs"`
}

// SRVRecord is one SRV answer, with the names of net.SRV.
type SRVRecord struct {
	Name     string `json:"Name"` // Hearth: the SRV name it answered
	Target   string `json:"Target"`
	Port     uint16 `json:"Port"`
	Priority uint16 `json:"Priority"`
	Weight   uint16 `json:"Weight"`
}

// HostResult is the addresses of one host.
type HostResult struct {
	CName string       `json:"CName"`
	Addrs []string     `json:"Addrs"`
	Error *ReportError `json:"Error"`
}

// ReportError is an error as JSON.
type ReportError struct {
	Message string `json:"Message"`
}

func reportError(err error) *ReportError {
	if err == nil {
		return nil
	}
	return &ReportError{Message: err.Error()}
}

// ConnectionReport is what one address answered.
type ConnectionReport struct {
	Certificates      []CertSummary     `json:"Certificates"`
	Cipher            CipherSummary     `json:"Cipher"`
	Checks            ConnectionChecks  `json:"Checks"`
	Errors            []ReportError     `json:"Errors"`
	Ed25519VerifyKeys map[string]string `json:"Ed25519VerifyKeys"`
	Info              map[string]any    `json:"Info"`
	Keys              json.RawMessage   `json:"Keys"`
}

// CertSummary describes one certificate the server sent.
type CertSummary struct {
	SubjectCommonName string   `json:"SubjectCommonName"`
	IssuerCommonName  string   `json:"IssuerCommonName"`
	SHA256Fingerprint string   `json:"SHA256Fingerprint"`
	DNSNames          []string `json:"DNSNames"`
	// Hearth: validity.
	NotBefore time.Time `json:"NotBefore"`
	NotAfter  time.Time `json:"NotAfter"`
}

// CipherSummary is the negotiated TLS version and cipher suite.
type CipherSummary struct {
	Version     string `json:"Version"`
	CipherSuite string `json:"CipherSuite"`
}

// ConnectionChecks are the key and certificate checks of one address.
type ConnectionChecks struct {
	AllChecksOK        bool                     `json:"AllChecksOK"`
	MatchingServerName bool                     `json:"MatchingServerName"`
	FutureValidUntilTS bool                     `json:"FutureValidUntilTS"`
	HasEd25519Key      bool                     `json:"HasEd25519Key"`
	AllEd25519ChecksOK bool                     `json:"AllEd25519ChecksOK"`
	Ed25519Checks      map[string]Ed25519Checks `json:"Ed25519Checks"`
	ValidCertificates  bool                     `json:"ValidCertificates"`
	// Hearth's: the key response is application/json, valid at least an
	// hour ahead, and /version answered.
	JSONContentType         bool `json:"JSONContentType"`
	ValidUntilAnHourAhead   bool `json:"ValidUntilAnHourAhead"`
	ValidUntilWithin7Days   bool `json:"ValidUntilWithin7Days"`
	CanonicalJSON           bool `json:"CanonicalJSON"`
	OldVerifyKeysWellFormed bool `json:"OldVerifyKeysWellFormed"`
}

// Ed25519Checks are the checks of one key.
type Ed25519Checks struct {
	ValidEd25519      bool `json:"ValidEd25519"`
	MatchingSignature bool `json:"MatchingSignature"`
}

// VersionReport is /_matrix/federation/v1/version.
type VersionReport struct {
	Name    string `json:"name,omitempty"`
	Version string `json:"version,omitempty"`
	Error   string `json:"error,omitempty"`
}

// ResolutionReport is each step of the spec's "Resolving server names"
// and what it found.
type ResolutionReport struct {
	Step    string   `json:"Step"`
	Host    string   `json:"Host"`
	TLSName string   `json:"TLSName"`
	Targets []string `json:"Targets"`
	Trace   []string `json:"Trace"`
}

// OutboundReport is the signed request this server made to the remote.
type OutboundReport struct {
	Request string `json:"Request"`
	Status  int    `json:"Status"`
	// Accepted: the remote checked our signature and let the request in
	// (any answer but 401 or 403).
	Accepted bool   `json:"Accepted"`
	ErrCode  string `json:"ErrCode,omitempty"`
	Error    string `json:"Error,omitempty"`
}

// NotaryReport is a trusted key server's view of the remote's keys.
type NotaryReport struct {
	Notary string            `json:"Notary"`
	Keys   map[string]string `json:"Keys,omitempty"`
	Match  bool              `json:"Match"`
	Error  string            `json:"Error,omitempty"`
}
