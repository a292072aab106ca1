package diag

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"hearth/server/federation"
	"hearth/server/rooms"
)

// FederationTest checks serverName as another server would find and
// reach it: every step of the spec's "Resolving server names", then per
// address the TLS facts and the key and version endpoints; with a config
// that has a signing key, a signed request (do they accept us?) and the
// notaries' view of the keys.
func (t *Tester) FederationTest(ctx context.Context, serverName string) *Report {
	r := &Report{ServerName: serverName, TestedAt: t.now().UTC(),
		ConnectionReports: map[string]ConnectionReport{}, ConnectionErrors: map[string]ReportError{},
		DNSResult: DNSResult{SRVRecords: []SRVRecord{}, Hosts: map[string]HostResult{}, Addrs: []string{}}}
	defer t.verdict(r)
	sn, err := federation.ParseServerName(serverName)
	if err != nil {
		r.Error = err.Error()
		r.add(Finding{Check: "name", Status: Fail, Subject: serverName, Message: err.Error(),
			Fix: "A server name is a hostname or IP address, optionally with :port (spec: Appendices, Server Name)."})
		return r
	}
	if t.cfg != nil && t.cfg.FederationDomainWhitelist != nil && !slices.Contains(t.cfg.FederationDomainWhitelist, serverName) {
		r.add(Finding{Check: "whitelist", Status: Warn, Subject: serverName,
			Message: serverName + " is not on this server's federation_domain_whitelist: federation with it is refused whatever this test finds.",
			Fix:     "Add it to federation_domain_whitelist, or remove the whitelist."})
	}

	var wk *wellKnownFetch
	if !sn.IP.IsValid() && sn.Port == 0 {
		f := t.fetchWellKnown(ctx, sn.Host, "")
		wk = &f
	}
	res, err := t.res.Resolve(ctx, serverName)
	if err != nil {
		r.Error = err.Error()
		r.add(Finding{Check: "resolve", Status: Fail, Subject: serverName, Message: err.Error(),
			Fix: "DNS could not answer for the name: check the domain's DNS records, and that this machine's DNS works (hearth doctor)."})
		return r
	}
	r.Resolution = &ResolutionReport{Step: res.Step.String(), Host: res.Host, TLSName: res.TLSName}
	for _, tg := range res.Targets {
		r.Resolution.Targets = append(r.Resolution.Targets, tg.Addr())
	}
	r.Resolution.Trace = trace(sn, res)
	if wk != nil {
		t.wellKnownFindings(r, wk, res)
	}
	t.dnsReport(ctx, r, sn, res)

	for _, addr := range r.DNSResult.Addrs {
		cr, err := t.connCheck(ctx, r, addr, res)
		if err != nil {
			r.ConnectionErrors[addr] = ReportError{Message: err.Error()}
			continue
		}
		r.ConnectionReports[addr] = *cr
	}
	t.reachability(r)
	t.version(ctx, r, res)
	t.outbound(ctx, r, serverName)
	t.notaryCheck(ctx, r, serverName)
	return r
}

func (r *Report) add(f Finding) { r.Findings = append(r.Findings, f) }

// verdict sets FederationOK (as the public tester does: every address
// answered and passed) and a sentence.
func (t *Tester) verdict(r *Report) {
	ok := r.Error == "" && len(r.ConnectionReports) > 0 && len(r.ConnectionErrors) == 0
	for _, cr := range r.ConnectionReports {
		ok = ok && cr.Checks.AllChecksOK
	}
	var fails []string
	for _, f := range r.Findings {
		if f.Status == Fail {
			fails = append(fails, f.Message)
		}
	}
	// As the public tester's: false when anything found could hamper
	// federation, which includes Hearth's own checks.
	r.FederationOK = ok && len(fails) == 0
	switch {
	case r.FederationOK:
		r.Verdict = "Federation with " + r.ServerName + " works."
	case ok:
		r.Verdict = "Other servers can reach " + r.ServerName + ", but: " + fails[0]
	case len(fails) > 0:
		r.Verdict = "Federation with " + r.ServerName + " fails: " + fails[0]
	default:
		r.Verdict = "Federation with " + r.ServerName + " fails."
	}
}

// trace describes each step of the spec's algorithm that was tried.
func trace(sn federation.ServerName, res *federation.Resolution) []string {
	var out []string
	switch {
	case sn.IP.IsValid():
		return []string{"1. The server name is an IP literal: connect to it directly, port " + strconv.Itoa(res.Targets[0].Port) + "."}
	case sn.Port != 0:
		return []string{"1. Not an IP literal.", "2. The server name has an explicit port: connect to " + sn.String() + ", certificate for " + sn.Host + "."}
	}
	out = append(out, "1. Not an IP literal.", "2. No explicit port.")
	if res.Delegated != "" {
		out = append(out, "3. https://"+sn.Host+"/.well-known/matrix/server delegates to "+res.Delegated+".")
	} else {
		why := "no delegation"
		if res.WellKnownErr != nil {
			why = res.WellKnownErr.Error()
		}
		out = append(out, "3. No .well-known delegation ("+why+").")
	}
	out = append(out, "→ "+res.Step.String()+": "+res.String())
	return out
}

// wellKnownFetch is one GET of /.well-known/matrix/server.
type wellKnownFetch struct {
	URL          string
	Addr         string // the address asked, "" for any
	Status       int
	ContentType  string
	CacheControl string
	Size         int
	Redirects    []string
	Server       string // m.server, when valid
	Problem      string // why the answer is not a delegation
	Err          error  // no answer at all
	HTML         bool
}

const wellKnownMax = 50 << 10

// fetchWellKnown GETs https://host/.well-known/matrix/server, at addr
// ("ip:port") or wherever host resolves to, following up to 5 redirects.
func (t *Tester) fetchWellKnown(ctx context.Context, host, addr string) wellKnownFetch {
	f := wellKnownFetch{URL: "https://" + host + "/.well-known/matrix/server", Addr: addr}
	u := f.URL
	for hop := 0; ; hop++ {
		c := t.webClient(addr)
		addr = "" // redirects go wherever their host resolves to
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			f.Err = err
			return f
		}
		req.Header.Set("Accept", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			f.Err = err
			return f
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, wellKnownMax+1))
		resp.Body.Close()
		if err != nil {
			f.Err = err
			return f
		}
		if resp.StatusCode >= 300 && resp.StatusCode < 400 && resp.Header.Get("Location") != "" {
			next, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
			if err != nil || next.Scheme != "https" || hop == 5 {
				f.Status, f.Problem = resp.StatusCode, "redirect to "+resp.Header.Get("Location")+", which is not followed (not https, or too many)"
				return f
			}
			f.Redirects = append(f.Redirects, next.String())
			u = next.String()
			continue
		}
		f.Status, f.Size = resp.StatusCode, len(body)
		f.ContentType, f.CacheControl = resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control")
		trimmed := bytes.TrimSpace(body)
		f.HTML = strings.HasPrefix(f.ContentType, "text/html") || bytes.HasPrefix(trimmed, []byte("<"))
		switch {
		case resp.StatusCode != http.StatusOK:
			f.Problem = "status " + strconv.Itoa(resp.StatusCode)
		case len(body) > wellKnownMax:
			f.Problem = "larger than 50 KiB"
		case f.HTML:
			f.Problem = "an HTML page, not JSON"
		default:
			var doc struct {
				Server *string `json:"m.server"`
			}
			if err := json.Unmarshal(body, &doc); err != nil {
				f.Problem = "not a JSON object: " + err.Error()
			} else if doc.Server == nil {
				f.Problem = "the JSON has no m.server string"
			} else if _, err := federation.ParseServerName(*doc.Server); err != nil {
				f.Problem = "m.server: " + err.Error()
			} else {
				f.Server = *doc.Server
			}
		}
		return f
	}
}

// webClient is an HTTPS client that verifies certificates as federation
// does and dials through the address policy (at addr when set).
func (t *Tester) webClient(addr string) *http.Client {
	tc := t.tr.WebClient()
	if addr != "" {
		ht := tc.Transport.(*http.Transport).Clone()
		ht.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
			return t.dialer.DialContext(ctx, network, addr)
		}
		tc.Transport = ht
	}
	tc.Timeout = 20 * time.Second
	tc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return tc
}

// wellKnownFindings explains the .well-known answer in the light of
// where resolution ended up.
func (t *Tester) wellKnownFindings(r *Report, f *wellKnownFetch, res *federation.Resolution) {
	r.WellKnownResult.Server = f.Server
	if f.Server != "" {
		r.WellKnownResult.CacheExpiresAt = t.now().Add(cacheTTL(f.CacheControl)).Unix()
	}
	add := func(st Status, msg, fix string) {
		r.add(Finding{Check: "wellknown", Status: st, Subject: f.URL, Message: msg, Fix: fix})
	}
	if len(f.Redirects) > 0 {
		add(Info, "The request was redirected: "+strings.Join(f.Redirects, " → ")+".", "Servers follow redirects, but serving the file directly is faster and sturdier.")
	}
	switch {
	case f.Err != nil:
		r.WellKnownResult.Result = f.Err.Error()
		add(Info, "No answer from "+f.URL+": "+f.Err.Error()+". Without it, federation falls back to SRV records and port 8448.",
			"If you meant to delegate federation to another host, this file must be served over HTTPS with a valid certificate.")
	case f.HTML:
		r.WellKnownResult.Result = f.Problem
		add(Fail, f.URL+" answers with an HTML page (Content-Type "+cmpOr(f.ContentType, "none")+"), not JSON: other servers ignore it and fall back to "+res.Step.String()+".",
			`A web server or CMS catch-all is answering. Serve the file as application/json with {"m.server": "matrix.example.org:443"} (or set serve_server_wellknown: true when Hearth answers on this host).`)
	case f.Status == http.StatusNotFound:
		r.WellKnownResult.Result = f.Problem
		add(Info, f.URL+" is not there (404): no delegation, so other servers use SRV records or port 8448.",
			"Only needed when federation is served on another host or port; serve_server_wellknown: true makes Hearth answer it.")
	case f.Problem != "":
		r.WellKnownResult.Result = f.Problem
		add(Fail, f.URL+" is not a valid delegation: "+f.Problem+".", `It must be application/json: {"m.server": "<host>[:<port>]"}.`)
	default:
		add(OK, "Delegates federation to "+f.Server+".", "")
		if !strings.HasPrefix(f.ContentType, "application/json") {
			add(Warn, "The answer's Content-Type is "+cmpOr(f.ContentType, "missing")+", not application/json.", "Serve it as application/json: some servers are strict.")
		}
		if f.CacheControl == "" {
			add(Info, "The answer has no Cache-Control header: other servers keep it for 24 hours.", "Set Cache-Control: max-age=86400 (or shorter while you are moving things).")
		}
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// cacheTTL reads max-age as the spec's caching rule does (24 h default,
// 48 h at most).
func cacheTTL(cc string) time.Duration {
	for _, d := range strings.Split(cc, ",") {
		name, val, _ := strings.Cut(strings.TrimSpace(d), "=")
		if strings.EqualFold(name, "max-age") {
			if n, err := strconv.Atoi(val); err == nil && n >= 0 {
				return min(time.Duration(n)*time.Second, 48*time.Hour)
			}
		}
	}
	return 24 * time.Hour
}

// dnsReport fills DNSResult: the SRV records of the host the SRV steps
// apply to (whether or not resolution used them), CNAME targets (which
// RFC 2782 forbids), and each target's addresses.
func (t *Tester) dnsReport(ctx context.Context, r *Report, sn federation.ServerName, res *federation.Resolution) {
	d := &r.DNSResult
	srvHost := ""
	switch res.Step {
	case federation.StepSRV, federation.StepLegacySRV, federation.StepDefaultPort:
		srvHost = sn.Host
	case federation.StepWellKnownSRV, federation.StepWellKnownLegacySRV, federation.StepWellKnownDefaultPort:
		srvHost, _, _ = strings.Cut(res.Delegated, ":")
	default:
		d.SRVSkipped = true
	}
	if srvHost != "" {
		for _, name := range []string{"_matrix-fed._tcp." + srvHost, "_matrix._tcp." + srvHost} {
			in, err := t.res.Exchange(ctx, name, dns.TypeSRV)
			if err != nil {
				d.SRVError = reportError(err)
				r.add(Finding{Check: "dns.srv", Status: Fail, Subject: name, Message: "SRV lookup failed: " + err.Error(),
					Fix: "Federation cannot tell whether SRV records exist: fix the domain's DNS (or this machine's DNS)."})
				continue
			}
			for _, rr := range in.Answer {
				switch rr := rr.(type) {
				case *dns.SRV:
					d.SRVRecords = append(d.SRVRecords, SRVRecord{Name: name, Target: strings.TrimSuffix(rr.Target, "."), Port: rr.Port, Priority: rr.Priority, Weight: rr.Weight})
				case *dns.CNAME:
					d.SRVCName = strings.TrimSuffix(rr.Target, ".")
				}
			}
		}
		if len(d.SRVRecords) > 0 {
			var recs []string
			for _, rec := range d.SRVRecords {
				recs = append(recs, fmt.Sprintf("%s → %s:%d (priority %d, weight %d)", rec.Name, rec.Target, rec.Port, rec.Priority, rec.Weight))
			}
			r.add(Finding{Check: "dns.srv", Status: OK, Subject: srvHost, Message: "SRV records: " + strings.Join(recs, "; ") + "."})
		}
		if res.Step == federation.StepLegacySRV || res.Step == federation.StepWellKnownLegacySRV {
			r.add(Finding{Check: "dns.srv", Status: Warn, Subject: res.SRV, Message: "Only the deprecated _matrix._tcp SRV record exists.",
				Fix: "Add the same record as _matrix-fed._tcp." + srvHost + "; servers may stop reading _matrix._tcp."})
		}
		for _, rec := range d.SRVRecords {
			in, err := t.res.Exchange(ctx, rec.Target, dns.TypeCNAME)
			if err != nil {
				continue
			}
			for _, rr := range in.Answer {
				if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(strings.TrimSuffix(c.Hdr.Name, "."), rec.Target) {
					r.add(Finding{Check: "dns.srv.cname", Status: Fail, Subject: rec.Target,
						Message: fmt.Sprintf("The SRV record %s points at %s, which is a CNAME (for %s): RFC 2782 forbids SRV targets that are aliases, and some servers refuse them.",
							rec.Name, rec.Target, strings.TrimSuffix(c.Target, ".")),
						Fix: "Point the SRV record at a name with its own A/AAAA records (the CNAME's target)."})
				}
			}
		}
	}
	seen := map[string]bool{}
	for _, tg := range res.Targets {
		if ip, err := netip.ParseAddr(tg.Host); err == nil {
			d.Addrs = append(d.Addrs, net.JoinHostPort(ip.String(), strconv.Itoa(tg.Port)))
			continue
		}
		hr := d.Hosts[tg.Host]
		if !seen[tg.Host] {
			seen[tg.Host] = true
			hr = t.lookupHost(ctx, tg.Host)
			d.Hosts[tg.Host] = hr
			if hr.Error != nil {
				r.add(Finding{Check: "dns.host", Status: Fail, Subject: tg.Host, Message: "No address for " + tg.Host + ": " + hr.Error.Message,
					Fix: "Add an A (IPv4) and/or AAAA (IPv6) record for " + tg.Host + "."})
			}
		}
		for _, a := range hr.Addrs {
			d.Addrs = append(d.Addrs, net.JoinHostPort(a, strconv.Itoa(tg.Port)))
		}
	}
}

// lookupHost asks for AAAA and A separately, so a broken family shows.
func (t *Tester) lookupHost(ctx context.Context, host string) HostResult {
	hr := HostResult{Addrs: []string{}}
	var errs []error
	for _, q := range []uint16{dns.TypeAAAA, dns.TypeA} {
		in, err := t.res.Exchange(ctx, host, q)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, rr := range in.Answer {
			switch rr := rr.(type) {
			case *dns.A:
				hr.Addrs = append(hr.Addrs, rr.A.String())
			case *dns.AAAA:
				hr.Addrs = append(hr.Addrs, rr.AAAA.String())
			case *dns.CNAME:
				hr.CName = strings.TrimSuffix(rr.Target, ".")
			}
		}
	}
	if len(hr.Addrs) == 0 {
		if len(errs) == 0 {
			errs = append(errs, errors.New("DNS has no A or AAAA record"))
		}
		hr.Error = reportError(errors.Join(errs...))
	}
	return hr
}

// connCheck connects to addr as federation would for res and checks the
// certificate and the key endpoint. An error means no TLS connection.
func (t *Tester) connCheck(ctx context.Context, r *Report, addr string, res *federation.Resolution) (*ConnectionReport, error) {
	conn, err := t.dialTLS(ctx, addr, res.TLSName)
	if err != nil {
		r.add(connectFinding(addr, err))
		return nil, err
	}
	state := conn.ConnectionState()
	conn.Close()
	cr := &ConnectionReport{Errors: []ReportError{}, Info: map[string]any{}, Ed25519VerifyKeys: map[string]string{},
		Cipher: CipherSummary{Version: versionName(state.Version), CipherSuite: tlsCipherName(state.CipherSuite)}}
	for _, c := range state.PeerCertificates {
		fp := sha256.Sum256(c.Raw)
		cr.Certificates = append(cr.Certificates, CertSummary{SubjectCommonName: c.Subject.CommonName, IssuerCommonName: c.Issuer.CommonName,
			SHA256Fingerprint: base64.RawStdEncoding.EncodeToString(fp[:]), DNSNames: c.DNSNames, NotBefore: c.NotBefore, NotAfter: c.NotAfter})
	}
	if state.Version < 0x0303 {
		r.add(Finding{Check: "tls.version", Status: Fail, Subject: addr, Message: "TLS " + versionName(state.Version) + " is too old.", Fix: "Enable TLS 1.2 or 1.3."})
	}
	cr.Checks.ValidCertificates = t.verifyChain(r, addr, state.PeerCertificates, res)

	// The key endpoint, over a new connection to the same address.
	c := t.httpsAt(addr, res.TLSName)
	defer c.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+res.Host+"/_matrix/key/v2/server", nil)
	resp, err := c.Do(req)
	if err != nil {
		cr.Errors = append(cr.Errors, ReportError{Message: "GET /_matrix/key/v2/server: " + err.Error()})
		r.add(Finding{Check: "keys", Status: Fail, Subject: addr, Message: "GET /_matrix/key/v2/server failed: " + err.Error(),
			Fix: "The federation listener must serve the key endpoint on this address."})
		return cr, nil
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	cr.Info["Date"] = resp.Header.Get("Date")
	if resp.StatusCode != http.StatusOK {
		cr.Errors = append(cr.Errors, ReportError{Message: fmt.Sprintf("GET /_matrix/key/v2/server: status %d", resp.StatusCode)})
		r.add(Finding{Check: "keys", Status: Fail, Subject: addr, Message: fmt.Sprintf("GET /_matrix/key/v2/server answered %d.", resp.StatusCode),
			Fix: "Something other than a Matrix server answers here (a reverse proxy that does not pass /_matrix/ on, or another site)."})
		return cr, nil
	}
	cr.Keys = json.RawMessage(slices.Clone(body))
	t.checkKeys(r, addr, cr, body, resp.Header.Get("Content-Type"))
	return cr, nil
}

// connectFinding explains a failed connection.
func connectFinding(addr string, err error) Finding {
	f := Finding{Check: "connect", Status: Fail, Subject: addr}
	msg := err.Error()
	switch {
	case refused(err):
		f.Message = "Not tried: " + addr + " is a private or reserved address (" + msg + ")."
		f.Fix = "Other servers cannot reach private addresses either: publish the public address in DNS. (To test a private network, list its range in ip_range_whitelist.)"
	case errors.Is(err, syscall.ECONNREFUSED):
		f.Message = "Nothing listens on " + addr + " (connection refused)."
		f.Fix = "Open this port: a federation listener (tls: true, resources [federation]) must listen on it, or DNS/.well-known must name the port it does listen on."
	case strings.Contains(msg, "timeout") || strings.Contains(msg, "deadline"):
		f.Message = "No answer from " + addr + " (timed out): a firewall drops the packets."
		f.Fix = "Open the port in the firewall (and in the router's port forwarding, at home). Some CDNs do not pass port 8448."
	case strings.Contains(msg, "TLS handshake") || strings.Contains(msg, "tls:"):
		f.Message = addr + " accepts connections but the TLS handshake fails: " + msg + "."
		f.Fix = "The port must speak TLS directly (not plain HTTP, and not a proxy that expects another name)."
	default:
		f.Message = "Cannot connect to " + addr + ": " + msg + "."
		f.Fix = "Check that the server runs and that the address is right."
	}
	if ip, e := netip.ParseAddrPort(addr); e == nil && ip.Addr().Is6() && f.Check == "connect" && !refused(err) {
		f.Check = "connect.ipv6"
		f.Message += " This is an IPv6 address (AAAA record)."
		f.Fix = "Servers with IPv6 try this address: make Hearth listen on IPv6 too (bind_addresses: ['::', '0.0.0.0']) and open the firewall for it, or remove the AAAA record."
	}
	return f
}

// verifyChain checks the certificates as another server would: a chain
// to a trusted root, valid for the name the resolution step requires.
func (t *Tester) verifyChain(r *Report, addr string, certs []*x509.Certificate, res *federation.Resolution) bool {
	if len(certs) == 0 {
		r.add(Finding{Check: "tls.chain", Status: Fail, Subject: addr, Message: "The server sent no certificate."})
		return false
	}
	leaf, now := certs[0], t.now()
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	ok := true
	_, err := leaf.Verify(x509.VerifyOptions{Roots: t.roots, Intermediates: inter, CurrentTime: now})
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	switch {
	case err == nil:
		r.add(Finding{Check: "tls.chain", Status: OK, Subject: addr, Message: fmt.Sprintf("Certificate chain of %d, issued by %s, trusted.", len(certs), leaf.Issuer.CommonName)})
	case bytes.Equal(leaf.RawIssuer, leaf.RawSubject) && leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature) == nil:
		ok = false
		r.add(Finding{Check: "tls.selfsigned", Status: Fail, Subject: addr, Message: "The certificate is self-signed: other servers refuse it (the spec requires a certificate from a trusted CA since Synapse 1.0).",
			Fix: "Get a certificate from a CA: acme.enabled: true does it for you, or use certbot and point tls_certificate_path at fullchain.pem."})
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		ok = false
		r.add(Finding{Check: "tls.expiry", Status: Fail, Subject: addr, Message: fmt.Sprintf("The certificate expired on %s.", leaf.NotAfter.UTC().Format(time.RFC1123)),
			Fix: "Renew it (acme.enabled: true renews automatically); Hearth reloads new certificate files without a restart."})
	case errors.As(err, &ua) && len(certs) == 1:
		ok = false
		r.add(Finding{Check: "tls.chain", Status: Fail, Subject: addr,
			Message: "The server sends only its own certificate, without the intermediate certificate of its issuer (" + leaf.Issuer.CommonName + "): other servers cannot build a chain to a root they trust.",
			Fix:     "Serve the full chain: with certbot, tls_certificate_path must be fullchain.pem, not cert.pem."})
	case errors.As(err, &ua):
		ok = false
		r.add(Finding{Check: "tls.chain", Status: Fail, Subject: addr, Message: "The certificate is issued by " + leaf.Issuer.CommonName + ", which other servers do not trust.",
			Fix: "Use a certificate from a public CA (acme.enabled: true)."})
	default:
		ok = false
		r.add(Finding{Check: "tls.chain", Status: Fail, Subject: addr, Message: "The certificate is not valid: " + err.Error() + ".", Fix: "Replace the certificate."})
	}
	if err := leaf.VerifyHostname(res.TLSName); err != nil {
		ok = false
		names := strings.Join(leaf.DNSNames, ", ")
		for _, ip := range leaf.IPAddresses {
			names = strings.TrimPrefix(names+", "+ip.String(), ", ")
		}
		msg := fmt.Sprintf("The certificate is for %s, not %s, the name %s requires.", cmpOr(names, leaf.Subject.CommonName), res.TLSName, res.Step)
		fix := "Get a certificate that includes " + res.TLSName + "."
		if res.SRV != "" {
			msg += " With an SRV record the certificate must be for the server name (or the delegated name), not for the SRV target."
			fix = "Add " + res.TLSName + " to the certificate served on the SRV target, or delegate with .well-known to the target's name instead."
		}
		r.add(Finding{Check: "tls.name", Status: Fail, Subject: addr, Message: msg, Fix: fix})
	} else if err == nil || ok {
		r.add(Finding{Check: "tls.name", Status: OK, Subject: addr, Message: "The certificate is valid for " + res.TLSName + "."})
	}
	if left := leaf.NotAfter.Sub(now); left > 0 && left < 14*24*time.Hour {
		in := fmt.Sprintf("in %d days", int(left.Hours()/24))
		if left < 24*time.Hour {
			in = "within a day"
		}
		r.add(Finding{Check: "tls.expiry", Status: Warn, Subject: addr, Message: fmt.Sprintf("The certificate expires %s (%s).", in, leaf.NotAfter.UTC().Format(time.RFC1123)),
			Fix: "Renew it soon; with acme.enabled Hearth renews 30 days ahead, so this means renewal is failing (see the dashboard)."})
	}
	if t.insecure && !ok {
		r.add(Finding{Check: "tls.chain", Status: Info, Subject: addr, Message: "This server has federation_verify_certificates: false, so it would talk to it anyway; other servers would not."})
	}
	return ok
}

// checkKeys checks a /_matrix/key/v2/server answer (spec: "Publishing
// Keys").
func (t *Tester) checkKeys(r *Report, addr string, cr *ConnectionReport, body []byte, contentType string) {
	ck := &cr.Checks
	ck.Ed25519Checks = map[string]Ed25519Checks{}
	ck.JSONContentType = strings.HasPrefix(contentType, "application/json")
	if !ck.JSONContentType {
		r.add(Finding{Check: "keys.content_type", Status: Warn, Subject: addr, Message: "The key response's Content-Type is " + cmpOr(contentType, "missing") + ", not application/json."})
	}
	var doc struct {
		ServerName string `json:"server_name"`
		VerifyKeys map[string]struct {
			Key string `json:"key"`
		} `json:"verify_keys"`
		OldVerifyKeys map[string]struct {
			Key       string `json:"key"`
			ExpiredTS int64  `json:"expired_ts"`
		} `json:"old_verify_keys"`
		ValidUntilTS int64 `json:"valid_until_ts"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		r.add(Finding{Check: "keys", Status: Fail, Subject: addr, Message: "The key response is not JSON: " + err.Error() + ".",
			Fix: "Something other than a Matrix server answers /_matrix/key/v2/server here."})
		return
	}
	if canon, err := rooms.CanonicalJSON(body); err == nil {
		ck.CanonicalJSON = bytes.Equal(canon, bytes.TrimSpace(body))
	}
	ck.MatchingServerName = doc.ServerName == r.ServerName
	if !ck.MatchingServerName {
		r.add(Finding{Check: "keys.server_name", Status: Fail, Subject: addr,
			Message: fmt.Sprintf("The key response is for server_name %q, not %q: another server answers here.", doc.ServerName, r.ServerName),
			Fix:     "Point DNS/.well-known at the server whose server_name is " + r.ServerName + "."})
	}
	now := t.now()
	vut := time.UnixMilli(doc.ValidUntilTS)
	ck.FutureValidUntilTS = vut.After(now)
	ck.ValidUntilAnHourAhead = vut.After(now.Add(time.Hour))
	ck.ValidUntilWithin7Days = !vut.After(now.Add(7*24*time.Hour + time.Hour))
	switch {
	case !ck.FutureValidUntilTS:
		r.add(Finding{Check: "keys.valid_until", Status: Fail, Subject: addr,
			Message: fmt.Sprintf("The signing key expired: valid_until_ts is %s, in the past. Other servers refuse what it signs.", vut.UTC().Format(time.RFC1123)),
			Fix:     "The server must republish its key with a future valid_until_ts (Hearth does this itself; other software may need a restart)."})
	case !ck.ValidUntilAnHourAhead:
		r.add(Finding{Check: "keys.valid_until", Status: Warn, Subject: addr, Message: "valid_until_ts is less than an hour ahead: servers will refetch the key constantly."})
	case !ck.ValidUntilWithin7Days:
		r.add(Finding{Check: "keys.valid_until", Status: Info, Subject: addr, Message: "valid_until_ts is more than 7 days ahead; other servers cap it at 7 days."})
	}
	ck.AllEd25519ChecksOK = true
	for id, k := range doc.VerifyKeys {
		if !strings.HasPrefix(id, "ed25519:") {
			continue
		}
		ck.HasEd25519Key = true
		var c Ed25519Checks
		pub, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(k.Key, "="))
		c.ValidEd25519 = err == nil && len(pub) == ed25519.PublicKeySize
		if c.ValidEd25519 {
			cr.Ed25519VerifyKeys[id] = k.Key
			c.MatchingSignature = rooms.VerifyJSON(body, doc.ServerName, id, ed25519.PublicKey(pub)) == nil
		}
		ck.Ed25519Checks[id] = c
		if !c.ValidEd25519 || !c.MatchingSignature {
			ck.AllEd25519ChecksOK = false
			r.add(Finding{Check: "keys.signature", Status: Fail, Subject: addr,
				Message: fmt.Sprintf("Key %s: valid ed25519 key %v, signature over the response %v.", id, c.ValidEd25519, c.MatchingSignature),
				Fix:     "The key response must be signed by every key it lists (a proxy that rewrites JSON breaks this)."})
		}
	}
	if !ck.HasEd25519Key {
		ck.AllEd25519ChecksOK = false
		r.add(Finding{Check: "keys", Status: Fail, Subject: addr, Message: "The key response lists no ed25519 key."})
	}
	ck.OldVerifyKeysWellFormed = true
	for id, k := range doc.OldVerifyKeys {
		pub, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(k.Key, "="))
		if err != nil || len(pub) != ed25519.PublicKeySize || k.ExpiredTS <= 0 {
			ck.OldVerifyKeysWellFormed = false
			r.add(Finding{Check: "keys.old_verify_keys", Status: Warn, Subject: addr, Message: "old_verify_keys." + id + " is not a 32-byte key with an expired_ts."})
		}
	}
	ck.AllChecksOK = ck.MatchingServerName && ck.FutureValidUntilTS && ck.HasEd25519Key && ck.AllEd25519ChecksOK && ck.ValidCertificates
	if ck.AllChecksOK {
		r.add(Finding{Check: "keys", Status: OK, Subject: addr, Message: fmt.Sprintf("Key response valid until %s, signed by %d key(s).", vut.UTC().Format(time.RFC1123), len(cr.Ed25519VerifyKeys))})
	}
}

// reachability reports address families where nothing answered.
func (t *Tester) reachability(r *Report) {
	fam := map[bool][2]int{} // is IPv6 → {answered, failed}
	for a := range r.ConnectionReports {
		if ap, err := netip.ParseAddrPort(a); err == nil {
			c := fam[ap.Addr().Is6()]
			c[0]++
			fam[ap.Addr().Is6()] = c
		}
	}
	for a := range r.ConnectionErrors {
		if ap, err := netip.ParseAddrPort(a); err == nil {
			c := fam[ap.Addr().Is6()]
			c[1]++
			fam[ap.Addr().Is6()] = c
		}
	}
	for _, v6 := range []bool{false, true} {
		c, ok := fam[v6]
		if !ok {
			continue
		}
		name := map[bool]string{false: "IPv4", true: "IPv6"}[v6]
		switch {
		case c[1] == 0:
			r.add(Finding{Check: "reach." + strings.ToLower(name), Status: OK, Message: fmt.Sprintf("Every %s address answered (%d).", name, c[0])})
		case c[0] == 0:
			r.add(Finding{Check: "reach." + strings.ToLower(name), Status: Fail, Message: fmt.Sprintf("No %s address answered (%d tried): servers reaching you over %s fail.", name, c[1], name)})
		default:
			r.add(Finding{Check: "reach." + strings.ToLower(name), Status: Warn, Message: fmt.Sprintf("%d of %d %s addresses did not answer.", c[1], c[0]+c[1], name)})
		}
	}
}

// version asks /_matrix/federation/v1/version at the first address that
// answered.
func (t *Tester) version(ctx context.Context, r *Report, res *federation.Resolution) {
	addrs := make([]string, 0, len(r.ConnectionReports))
	for a := range r.ConnectionReports {
		addrs = append(addrs, a)
	}
	if len(addrs) == 0 {
		r.Version.Error = "no address answered"
		return
	}
	slices.Sort(addrs)
	c := t.httpsAt(addrs[0], res.TLSName)
	defer c.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+res.Host+"/_matrix/federation/v1/version", nil)
	resp, err := c.Do(req)
	if err != nil {
		r.Version.Error = err.Error()
		return
	}
	defer resp.Body.Close()
	var v struct {
		Server struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		} `json:"server"`
	}
	if resp.StatusCode != http.StatusOK {
		r.Version.Error = "status " + strconv.Itoa(resp.StatusCode)
	} else if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&v); err != nil {
		r.Version.Error = err.Error()
	}
	r.Version.Name, r.Version.Version = v.Server.Name, v.Server.Version
	if r.Version.Error != "" {
		r.add(Finding{Check: "version", Status: Warn, Subject: addrs[0], Message: "GET /_matrix/federation/v1/version failed: " + r.Version.Error + "."})
	}
}

// outbound sends a signed request to the remote: a profile query for a
// user that does not exist. Any answer but 401/403 shows it checked our
// signature and let us in.
func (t *Tester) outbound(ctx context.Context, r *Report, serverName string) {
	if t.client == nil || t.unsigned || serverName == t.cfg.ServerName {
		return
	}
	q := url.Values{"user_id": {"@hearth-federation-test:" + serverName}, "field": {"displayname"}}
	o := &OutboundReport{Request: "GET /_matrix/federation/v1/query/profile?" + q.Encode()}
	r.Outbound = o
	err := t.client.Do(ctx, serverName, http.MethodGet, "/_matrix/federation/v1/query/profile", q, nil, nil)
	var re *federation.RemoteError
	switch {
	case err == nil:
		o.Status, o.Accepted = 200, true
	case errors.As(err, &re):
		o.Status, o.ErrCode, o.Error = re.Status, re.Code, re.Msg
		o.Accepted = re.Status != http.StatusUnauthorized && re.Status != http.StatusForbidden
	default:
		o.Error = err.Error()
	}
	switch {
	case o.Accepted:
		r.add(Finding{Check: "outbound", Status: OK, Subject: serverName, Message: fmt.Sprintf("%s accepted a request signed by %s (answer %d).", serverName, t.cfg.ServerName, o.Status)})
	case o.Status != 0:
		r.add(Finding{Check: "outbound", Status: Fail, Subject: serverName,
			Message: fmt.Sprintf("%s refused a request signed by %s: %d %s %s.", serverName, t.cfg.ServerName, o.Status, o.ErrCode, o.Error),
			Fix:     "It could not check our signature: it cannot fetch our keys (run hearth doctor: is this server reachable?), or a reverse proxy in front of either server rewrites the request URI."})
	default:
		r.add(Finding{Check: "outbound", Status: Fail, Subject: serverName, Message: "The signed request did not get an answer: " + o.Error + "."})
	}
}

// notaryCheck compares the keys the server publishes with what each
// trusted key server has seen: a difference means the key changed.
func (t *Tester) notaryCheck(ctx context.Context, r *Report, serverName string) {
	if t.keyRing == nil || len(t.notaries) == 0 {
		return
	}
	direct := map[string]string{}
	for _, cr := range r.ConnectionReports {
		for id, k := range cr.Ed25519VerifyKeys {
			direct[id] = strings.TrimRight(k, "=")
		}
	}
	for _, n := range t.notaries {
		if n.ServerName == serverName {
			continue
		}
		nr := NotaryReport{Notary: n.ServerName, Keys: map[string]string{}}
		keys, err := t.keyRing.QueryNotary(ctx, n, serverName)
		if err != nil {
			nr.Error = err.Error()
			r.add(Finding{Check: "notary", Status: Info, Subject: n.ServerName, Message: "The notary " + n.ServerName + " could not be asked: " + err.Error() + "."})
			r.Notaries = append(r.Notaries, nr)
			continue
		}
		nr.Match = len(direct) > 0
		for id, pub := range keys {
			nr.Keys[id] = base64.RawStdEncoding.EncodeToString(pub)
			if direct[id] != nr.Keys[id] {
				nr.Match = false
			}
		}
		if nr.Match {
			r.add(Finding{Check: "notary", Status: OK, Subject: n.ServerName, Message: "The notary " + n.ServerName + " has the same keys as the server publishes."})
		} else if len(direct) > 0 {
			r.add(Finding{Check: "notary", Status: Warn, Subject: n.ServerName,
				Message: fmt.Sprintf("The notary %s has other keys (%s) than the server publishes (%s): the signing key changed.", n.ServerName, keyList(nr.Keys), keyList(direct)),
				Fix:     "Servers that cached the old key refuse the new one's signatures until it expires. Keep the old key in old_signing_keys, and never replace a key without it."})
		}
		r.Notaries = append(r.Notaries, nr)
	}
}

func keyList(m map[string]string) string {
	var out []string
	for id, k := range m {
		out = append(out, id+"="+k)
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}
