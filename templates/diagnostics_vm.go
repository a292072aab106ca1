package templates

// View models of the Diagnostics and Federation tester pages
// (diagnostics.templ).

// FindingVM is one check's result.
type FindingVM struct {
	// Status is ok, info, warn or fail.
	Status, Check, Subject, Message, Fix string
}

// CertVM is one certificate the TLS listeners serve.
type CertVM struct {
	Source, Domain, Names, Issuer, Expires, Checked, Error string
	// Soon: expires within 14 days (or has expired).
	Soon bool
}

// CertsVM is the certificates the TLS listeners serve.
type CertsVM struct {
	TLS   bool // some listener serves TLS
	ACME  bool
	Certs []CertVM
}

// DoctorVM is the doctor's findings once it has run.
type DoctorVM struct {
	Ran      bool
	OK       bool
	Verdict  string
	Findings []FindingVM
	Failed   int
	Warned   int
}

// DiagnosticsVM is the Diagnostics page: the certificates, and the
// doctor's findings once it has run.
type DiagnosticsVM struct {
	Chrome
	CertsVM
	DoctorVM
}

// ConnectionVM is one address the federation tester connected to.
type ConnectionVM struct {
	Addr, TLS, Chain, Error string
	OK                      bool
}

// FedResultVM is one federation test's result.
type FedResultVM struct {
	OK          bool
	Verdict     string
	Trace       []string
	Connections []ConnectionVM
	Findings    []FindingVM
}

// FederationTestVM is the Federation tester page.
type FederationTestVM struct {
	Chrome
	ServerName string
	Ran        bool
	FedResultVM
	// JSONURL is the same report as JSON (the admin API).
	JSONURL string
}
