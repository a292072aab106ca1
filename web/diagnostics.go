package web

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"hearth/appliance/diag"
	"hearth/server/htmlpage"
	"hearth/server/matrix"
	"hearth/templates"
)

// The Diagnostics page (the certificates, and the doctor) and the
// Federation tester page, with the tester's JSON for admins' tools. Both
// run package diag with this server's config, so they apply its IP range
// rules, CAs and signing key exactly as federation does.

// tester makes a diag.Tester for one run.
func (d *Dashboard) tester() (*diag.Tester, error) {
	return diag.New(diag.Options{Config: d.srv.Config(), DNSServers: d.diagDNS, Log: d.srv.Log()})
}

// diagTimeout bounds one run of the checks.
const diagTimeout = 2 * time.Minute

// GET /_hearth/admin/diagnostics
func (d *Dashboard) getDiagnostics(w http.ResponseWriter, r *http.Request) error {
	d.pages.Render(w, r, http.StatusOK, templates.Diagnostics(d.diagnosticsVM(w, r)))
	return nil
}

// POST /_hearth/admin/diagnostics runs the doctor and shows its findings.
func (d *Dashboard) postDiagnostics(w http.ResponseWriter, r *http.Request) error {
	vm := d.diagnosticsVM(w, r)
	rep, err := d.runDoctor(r)
	if err != nil {
		return err
	}
	vm.DoctorVM = newDoctorVM(rep.All())
	d.pages.Render(w, r, http.StatusOK, templates.Diagnostics(vm))
	return nil
}

// runDoctor runs the doctor on this server and audits the run.
func (d *Dashboard) runDoctor(r *http.Request) (*diag.DoctorReport, error) {
	t, err := d.tester()
	if err != nil {
		return nil, fmt.Errorf("diagnostics: %w", err)
	}
	defer t.Close()
	ctx, cancel := contextWithTimeout(r, diagTimeout)
	defer cancel()
	rep, err := t.Doctor(ctx)
	if err != nil {
		return nil, fmt.Errorf("diagnostics: %w", err)
	}
	d.srv.Audit(r.Context(), d.actor(r), "diagnostics.run", d.srv.Config().ServerName, newDoctorVM(rep.All()).Verdict)
	return rep, nil
}

// newDoctorVM is the doctor's findings, worst first, with a one-line
// verdict; OK when none failed.
func newDoctorVM(fs []diag.Finding) templates.DoctorVM {
	vm := templates.DoctorVM{Ran: true, Findings: findingVMs(fs)}
	for _, f := range vm.Findings {
		switch f.Status {
		case "fail":
			vm.Failed++
		case "warn":
			vm.Warned++
		}
	}
	switch {
	case vm.Failed > 0:
		vm.Verdict = fmt.Sprintf("%s found: %s", plural(vm.Failed, "problem", "problems"), vm.Findings[0].Message)
	case vm.Warned > 0:
		vm.Verdict = fmt.Sprintf("Federation works; %s to look at.", plural(vm.Warned, "warning", "warnings"))
	default:
		vm.Verdict = "Every check passed."
	}
	vm.OK = vm.Failed == 0
	return vm
}

func (d *Dashboard) diagnosticsVM(w http.ResponseWriter, r *http.Request) templates.DiagnosticsVM {
	return templates.DiagnosticsVM{Chrome: d.chrome(w, r, "Diagnostics", "diagnostics"), CertsVM: d.certsVM(r.Context())}
}

// certsVM is the TLS listeners' certificates as the certificate manager
// last saw them.
func (d *Dashboard) certsVM(ctx context.Context) templates.CertsVM {
	vm := templates.CertsVM{TLS: d.certs != nil, ACME: d.srv.Config().ACME.Enabled}
	now := d.srv.Now()
	for _, s := range d.certs.Statuses(ctx) {
		c := templates.CertVM{Source: s.Source, Domain: s.Domain, Names: strings.Join(s.Names, ", "), Issuer: cmp.Or(s.Issuer, "—"), Error: s.Error}
		switch {
		case s.NotAfter.IsZero():
			c.Expires, c.Soon = "no certificate yet", true
		case s.NotAfter.Before(now):
			c.Expires, c.Soon = "expired "+s.NotAfter.UTC().Format("2006-01-02 15:04 MST"), true
		default:
			c.Expires = s.NotAfter.UTC().Format("2006-01-02") + " (in " + humanDuration(s.NotAfter.Sub(now)) + ")"
			c.Soon = s.NotAfter.Sub(now) < 14*24*time.Hour
		}
		if !s.Checked.IsZero() {
			c.Checked = humanDuration(max(now.Sub(s.Checked), time.Second)) + " ago"
		}
		vm.Certs = append(vm.Certs, c)
	}
	return vm
}

// findingVMs orders findings worst first, keeping the order within a
// status.
func findingVMs(fs []diag.Finding) []templates.FindingVM {
	rank := map[diag.Status]int{diag.Fail: 0, diag.Warn: 1, diag.Info: 2, diag.OK: 3}
	fs = slices.Clone(fs)
	slices.SortStableFunc(fs, func(a, b diag.Finding) int { return rank[a.Status] - rank[b.Status] })
	out := make([]templates.FindingVM, len(fs))
	for i, f := range fs {
		out[i] = templates.FindingVM{Status: string(f.Status), Check: f.Check, Subject: f.Subject, Message: f.Message, Fix: f.Fix}
	}
	return out
}

// GET /_hearth/admin/federation-test
func (d *Dashboard) getFederationTest(w http.ResponseWriter, r *http.Request) error {
	vm := templates.FederationTestVM{Chrome: d.chrome(w, r, "Federation tester", "fedtest"), ServerName: r.URL.Query().Get("server_name")}
	d.pages.Render(w, r, http.StatusOK, templates.FederationTest(vm))
	return nil
}

// POST /_hearth/admin/federation-test runs the tester on server_name.
func (d *Dashboard) postFederationTest(w http.ResponseWriter, r *http.Request) error {
	name := strings.TrimSpace(r.PostFormValue("server_name"))
	vm := templates.FederationTestVM{Chrome: d.chrome(w, r, "Federation tester", "fedtest"), ServerName: name}
	if name == "" {
		return &htmlpage.Error{Status: http.StatusBadRequest, Msg: "Give the name of the server to test."}
	}
	rep, err := d.federationTest(r, name)
	if err != nil {
		return err
	}
	vm.Ran, vm.FedResultVM = true, newFedResultVM(rep)
	vm.JSONURL = d.prefix + "/api/federation-test?server_name=" + url.QueryEscape(name)
	d.srv.Audit(r.Context(), d.actor(r), "federation.test", name, rep.Verdict)
	d.pages.Render(w, r, http.StatusOK, templates.FederationTest(vm))
	return nil
}

// newFedResultVM is a federation test's verdict, server discovery,
// addresses and findings.
func newFedResultVM(rep *diag.Report) templates.FedResultVM {
	vm := templates.FedResultVM{OK: rep.FederationOK, Verdict: rep.Verdict}
	if rep.Resolution != nil {
		vm.Trace = rep.Resolution.Trace
	}
	for _, a := range rep.DNSResult.Addrs {
		c := templates.ConnectionVM{Addr: a}
		if cr, ok := rep.ConnectionReports[a]; ok {
			c.OK = cr.Checks.AllChecksOK
			c.TLS = cr.Cipher.Version + " " + cr.Cipher.CipherSuite
			var chain []string
			for _, cs := range cr.Certificates {
				chain = append(chain, cs.SubjectCommonName+" (by "+cs.IssuerCommonName+", until "+cs.NotAfter.UTC().Format("2006-01-02")+")")
			}
			c.Chain = strings.Join(chain, " ← ")
			if !c.OK {
				c.Error = "a certificate or key check failed (below)"
			}
		} else if ce, ok := rep.ConnectionErrors[a]; ok {
			c.Error = ce.Message
		}
		vm.Connections = append(vm.Connections, c)
	}
	vm.Findings = findingVMs(rep.Findings)
	return vm
}

func (d *Dashboard) federationTest(r *http.Request, name string) (*diag.Report, error) {
	t, err := d.tester()
	if err != nil {
		return nil, fmt.Errorf("federation tester: %w", err)
	}
	defer t.Close()
	ctx, cancel := contextWithTimeout(r, diagTimeout)
	defer cancel()
	return t.FederationTest(ctx, name), nil
}

// GET /_hearth/admin/api/federation-test?server_name=
//
// The federation tester's report as JSON, in the shape of
// matrix-federation-tester's /api/report, for admins' tools (an admin's
// access token, as the Synapse admin API).
func (d *Dashboard) apiFederationTest(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("server_name")
	if name == "" {
		writeAPIError(w, http.StatusBadRequest, "M_MISSING_PARAM", "server_name is required")
		return
	}
	rep, err := d.federationTest(r, name)
	if err != nil {
		d.srv.Log().Error("federation tester", "err", err)
		writeAPIError(w, http.StatusInternalServerError, "M_UNKNOWN", "internal server error")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(rep)
}

func writeAPIError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode((&matrix.Error{Code: code, Msg: msg}).Body())
}

// contextWithTimeout is the request's context, bounded by d: a check run
// ends when the admin leaves the page, or after d.
func contextWithTimeout(r *http.Request, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), d)
}
