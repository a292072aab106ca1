package diag

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"hearth/config"
	"hearth/server/federation"
	"hearth/server/mailer"
)

// DoctorReport is the doctor's result: its own findings, then the
// federation test of this server's name.
type DoctorReport struct {
	ServerName string    `json:"server_name"`
	Findings   []Finding `json:"findings"`
	Federation *Report   `json:"federation"`
	// OK: nothing failed.
	OK bool `json:"ok"`
}

// All is every finding, the doctor's first.
func (d *DoctorReport) All() []Finding {
	out := slices.Clone(d.Findings)
	if d.Federation != nil {
		out = append(out, d.Federation.Findings...)
	}
	return out
}

func (d *DoctorReport) add(f Finding) { d.Findings = append(d.Findings, f) }

// Doctor checks this server's own set-up (the Tester's config) from the
// outside in: the server name, outbound DNS, the addresses per family,
// the .well-known on every address, CAA against the ACME CA, the
// federation test of the name (TLS, keys, version), that the keys served
// are this server's, clock skew, and a signed request to itself through
// the public route that shows whether a proxy rewrites request URIs.
func (t *Tester) Doctor(ctx context.Context) (*DoctorReport, error) {
	if t.cfg == nil {
		return nil, errors.New("diag: the doctor needs the server's config")
	}
	name := t.cfg.ServerName
	d := &DoctorReport{ServerName: name}
	sn, err := federation.ParseServerName(name)
	if err != nil {
		d.add(Finding{Check: "name", Status: Fail, Subject: name, Message: err.Error(), Fix: "server_name must be a hostname or IP, with an optional :port."})
		return d, nil
	}
	switch {
	case sn.IP.IsValid():
		d.add(Finding{Check: "name", Status: Warn, Subject: name, Message: "The server name is an IP address: it is in every user ID forever, so the server can never move, and no public CA certifies it.",
			Fix: "Use a domain name for a server meant to last (the server name cannot be changed later)."})
	case !strings.Contains(sn.Host, "."):
		d.add(Finding{Check: "name", Status: Warn, Subject: name, Message: sn.Host + " has no dot: other servers cannot resolve it on the Internet.", Fix: "Use a full domain name."})
	default:
		d.add(Finding{Check: "name", Status: OK, Subject: name, Message: "A valid server name."})
	}
	if !sn.IP.IsValid() {
		t.outboundDNS(ctx, d, sn.Host)
		if sn.Port == 0 {
			// With an explicit port the spec skips .well-known.
			t.wellKnownEverywhere(ctx, d, sn.Host)
		}
		t.caa(ctx, d)
	}
	d.Federation = t.FederationTest(ctx, name)
	t.ownKeys(d)
	t.clockSkew(d)
	t.selfRequest(ctx, d)
	t.smtp(ctx, d)
	d.OK = true
	for _, f := range d.All() {
		d.OK = d.OK && f.Status != Fail
	}
	return d, nil
}

// outboundDNS checks that this machine's DNS answers at all: without it,
// federation cannot find any server.
func (t *Tester) outboundDNS(ctx context.Context, d *DoctorReport, host string) {
	servers := strings.Join(t.res.DNSServers(), ", ")
	if _, err := t.res.Exchange(ctx, host, dns.TypeA); err != nil {
		d.add(Finding{Check: "dns.outbound", Status: Fail, Subject: servers, Message: "This machine's DNS does not answer: " + err.Error() + ".",
			Fix: "Federation needs DNS to find other servers: fix /etc/resolv.conf (or systemd-resolved), or the firewall that blocks port 53."})
		return
	}
	d.add(Finding{Check: "dns.outbound", Status: OK, Subject: servers, Message: "Outbound DNS answers."})
}

// wellKnownEverywhere fetches the .well-known from every address of host
// (each family separately): a load balancer or a forgotten AAAA record
// can give different answers to different servers.
func (t *Tester) wellKnownEverywhere(ctx context.Context, d *DoctorReport, host string) {
	hr := t.lookupHost(ctx, host)
	if hr.Error != nil {
		d.add(Finding{Check: "dns.host", Status: Fail, Subject: host, Message: "No address for " + host + ": " + hr.Error.Message + ".",
			Fix: "Add A (IPv4) and AAAA (IPv6) records for " + host + " pointing at this machine."})
		return
	}
	var v4, v6 []string
	for _, a := range hr.Addrs {
		if ip, _ := netip.ParseAddr(a); ip.Is6() {
			v6 = append(v6, a)
		} else {
			v4 = append(v4, a)
		}
	}
	d.add(Finding{Check: "dns.host", Status: OK, Subject: host, Message: fmt.Sprintf("IPv4: %s; IPv6: %s.", cmpOr(strings.Join(v4, ", "), "none"), cmpOr(strings.Join(v6, ", "), "none"))})
	answers := map[string][]string{}
	for _, a := range hr.Addrs {
		f := t.fetchWellKnown(ctx, host, net.JoinHostPort(a, "443"))
		key := f.Server
		switch {
		case f.Err != nil:
			key = "no answer (" + shortErr(f.Err) + ")"
		case f.Problem != "":
			key = "invalid (" + f.Problem + ")"
		}
		answers[key] = append(answers[key], a)
	}
	if len(answers) > 1 {
		var parts []string
		for k, addrs := range answers {
			parts = append(parts, strings.Join(addrs, ", ")+": "+k)
		}
		slices.Sort(parts)
		d.add(Finding{Check: "wellknown.consistency", Status: Fail, Subject: host,
			Message: "Different addresses of " + host + " give different .well-known answers: " + strings.Join(parts, "; ") + ".",
			Fix:     "Every address must serve the same file: an old AAAA or A record may point at another machine, or one web server lacks the file."})
	}
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && len(s)-i < 60 {
		return s[i+2:]
	}
	return s
}

// caa checks CAA records against the ACME CA in use (RFC 8659: the
// closest name up the tree that has CAA records governs).
func (t *Tester) caa(ctx context.Context, d *DoctorReport) {
	if !t.cfg.ACME.Enabled {
		return
	}
	caID := caIdentifier(t.cfg)
	for _, domain := range t.cfg.ACME.Domains {
		labels := strings.Split(strings.TrimSuffix(domain, "."), ".")
		for i := range labels {
			name := strings.Join(labels[i:], ".")
			in, err := t.res.Exchange(ctx, name, dns.TypeCAA)
			if err != nil {
				d.add(Finding{Check: "dns.caa", Status: Warn, Subject: name, Message: "CAA lookup failed: " + err.Error() + ". CAs refuse to issue when CAA cannot be checked."})
				break
			}
			var issuers []string
			for _, rr := range in.Answer {
				if c, ok := rr.(*dns.CAA); ok && (c.Tag == "issue" || c.Tag == "issuewild") {
					v, _, _ := strings.Cut(c.Value, ";")
					issuers = append(issuers, strings.TrimSpace(v))
				}
			}
			if len(issuers) == 0 {
				continue
			}
			if slices.Contains(issuers, caID) {
				d.add(Finding{Check: "dns.caa", Status: OK, Subject: name, Message: "CAA allows " + caID + "."})
			} else {
				d.add(Finding{Check: "dns.caa", Status: Fail, Subject: name,
					Message: fmt.Sprintf("CAA records of %s allow only %s, not %s (acme.url): the CA will refuse to issue for %s.", name, strings.Join(issuers, ", "), caID, domain),
					Fix:     fmt.Sprintf(`Add a CAA record: %s CAA 0 issue "%s".`, name, caID)})
			}
			break
		}
	}
}

// caIdentifier is the CAA issuer domain of the ACME CA: Let's Encrypt's
// is letsencrypt.org; for another, the directory host's last two labels.
func caIdentifier(cfg *config.Config) string {
	u, err := url.Parse(cfg.ACMEDirectory())
	if err != nil {
		return ""
	}
	host := u.Hostname()
	if strings.HasSuffix(host, ".letsencrypt.org") {
		return "letsencrypt.org"
	}
	parts := strings.Split(host, ".")
	if len(parts) > 2 {
		parts = parts[len(parts)-2:]
	}
	return strings.Join(parts, ".")
}

// ownKeys checks that the keys served for the name are this server's.
func (t *Tester) ownKeys(d *DoctorReport) {
	if t.ownKey == nil || d.Federation == nil {
		return
	}
	want := strings.TrimRight(b64(t.ownKey.Private.Public()), "=")
	for addr, cr := range d.Federation.ConnectionReports {
		got, ok := cr.Ed25519VerifyKeys[t.ownKey.KeyID]
		if ok && strings.TrimRight(got, "=") == want {
			continue
		}
		d.add(Finding{Check: "keys.own", Status: Fail, Subject: addr,
			Message: fmt.Sprintf("The server answering at %s publishes keys %s, not this server's %s: another installation answers for %s, or the signing key was replaced.", addr, keyList(cr.Ed25519VerifyKeys), t.ownKey.KeyID, t.cfg.ServerName),
			Fix:     "Point DNS at this machine; if the key was replaced, put the old one in old_signing_keys so that what it signed still verifies."})
		return
	}
	if len(d.Federation.ConnectionReports) > 0 {
		d.add(Finding{Check: "keys.own", Status: OK, Message: "Every address serves this server's signing key " + t.ownKey.KeyID + "."})
	}
}

// clockSkew compares the Date the server sent with this clock.
func (t *Tester) clockSkew(d *DoctorReport) {
	for addr, cr := range d.Federation.ConnectionReports {
		date, _ := cr.Info["Date"].(string)
		at, err := http.ParseTime(date)
		if err != nil {
			continue
		}
		skew := t.now().Sub(at).Round(time.Second)
		if skew < 0 {
			skew = -skew
		}
		if skew > 30*time.Second {
			d.add(Finding{Check: "clock", Status: Warn, Subject: addr, Message: fmt.Sprintf("The server's clock differs from this one by %s.", skew),
				Fix: "Run NTP (systemd-timesyncd or chrony): signatures and key validity depend on the time."})
		} else {
			d.add(Finding{Check: "clock", Status: OK, Subject: addr, Message: fmt.Sprintf("Clock within %s.", max(skew, time.Second))})
		}
		return
	}
}

// selfRequest sends a signed request to this server through the public
// route, with a path whose escaping a rewriting proxy would change. The
// server checks the signature over the URI it received: a 401 means the
// URI arrived different from the one signed.
func (t *Tester) selfRequest(ctx context.Context, d *DoctorReport) {
	if t.client == nil || t.unsigned || len(d.Federation.ConnectionReports) == 0 {
		return
	}
	name := t.cfg.ServerName
	path := "/_matrix/federation/v1/event/%24hearth-doctor-probe%3A" + url.PathEscape(name)
	err := t.client.Do(ctx, name, http.MethodGet, path, nil, nil, nil)
	var re *federation.RemoteError
	switch {
	case errors.As(err, &re) && (re.Status == http.StatusUnauthorized || re.Status == http.StatusForbidden):
		d.add(Finding{Check: "proxy.uri", Status: Fail, Subject: name,
			Message: fmt.Sprintf("A signed request from this server to itself was refused (%d %s: %s): the request URI arrived different from the one signed, so a reverse proxy rewrites it.", re.Status, re.Code, re.Msg),
			Fix:     "Make the proxy pass the URI unchanged: with nginx, proxy_pass http://127.0.0.1:8008; with no path after the port; with Apache, nocanon and AllowEncodedSlashes NoDecode."})
	case err == nil || errors.As(err, &re):
		d.add(Finding{Check: "proxy.uri", Status: OK, Subject: name, Message: "A signed request to itself arrived intact (the request URI is passed unchanged)."})
	default:
		d.add(Finding{Check: "proxy.uri", Status: Warn, Subject: name, Message: "The signed request to itself failed: " + err.Error() + "."})
	}
}

// smtp checks the email section's mail server: connection, TLS as
// configured, login; nothing is sent.
func (t *Tester) smtp(ctx context.Context, d *DoctorReport) {
	if t.cfg.Email == nil {
		return
	}
	e := t.cfg.Email
	subject := net.JoinHostPort(e.SMTPHost, fmt.Sprint(e.SMTPPort))
	m, err := mailer.New(*e, t.cfg.ServerName)
	if err == nil {
		err = m.Check(ctx)
	}
	if err != nil {
		d.add(Finding{Check: "email.smtp", Status: Fail, Subject: subject, Message: err.Error(),
			Fix: "Fix the email section's keys named in the message; until then users cannot add, register with or reset by email addresses."})
		return
	}
	d.add(Finding{Check: "email.smtp", Status: OK, Subject: subject, Message: "The mail server accepts this server's connection and login (nothing was sent)."})
}
