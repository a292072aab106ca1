package appliance

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"hearth/config"
	"hearth/server/servertest"
)

// dashboardQueries reads docs/grafana-dashboard.json and returns every
// panel's query by panel title, checking the layout Grafana needs.
func dashboardQueries(t *testing.T) map[string][]string {
	t.Helper()
	raw, err := os.ReadFile("../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			ID      int                      `json:"id"`
			Type    string                   `json:"type"`
			Title   string                   `json:"title"`
			GridPos struct{ H, W, X, Y int } `json:"gridPos"`
			Targets []struct {
				Expr       string `json:"expr"`
				RefID      string `json:"refId"`
				Datasource struct {
					UID string `json:"uid"`
				} `json:"datasource"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name string `json:"name"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json is not valid JSON: %v", err)
	}
	if dash.UID == "" || len(dash.Templating.List) != 2 {
		t.Fatalf("uid %q, %d variables", dash.UID, len(dash.Templating.List))
	}
	out := map[string][]string{}
	ids := map[int]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 || p.GridPos.H <= 0 {
			t.Errorf("panel %q: grid position %+v", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Datasource.UID != "${datasource}" || tg.RefID == "" {
				t.Errorf("panel %q: datasource %q refId %q", p.Title, tg.Datasource.UID, tg.RefID)
			}
			out[p.Title] = append(out[p.Title], tg.Expr)
		}
	}
	if len(out) < 20 {
		t.Fatalf("%d panels with queries", len(out))
	}
	return out
}

var metricNameRe = regexp.MustCompile(`\b(?:hearth|go|process)_[a-z_]+\b`)

// TestGrafanaDashboard checks docs/grafana-dashboard.json against a running
// Hearth: every metric a query names is in a scrape of the metrics
// listener, and, where Prometheus is installed (apt-get install
// prometheus), a real Prometheus scraping that listener runs every query
// without error, and each returns data except those that need federation
// traffic or server errors.
func TestGrafanaDashboard(t *testing.T) {
	queries := dashboardQueries(t)

	cfg := servertest.Config(t, t.TempDir())
	cfg.EnableMetrics = true
	port := freePort(t)
	cfg.Listeners = append(cfg.Listeners, config.Listener{Port: port, BindAddresses: []string{"127.0.0.1"}, Type: "metrics"})
	addr := runAppliance(t, cfg)
	ctx := context.Background()
	cli, err := mautrix.NewClient("http://"+addr, "", "")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "grafana", Password: "a long password for grafana"})
	if err != nil {
		t.Fatal(err)
	}
	cli.UserID, cli.AccessToken = reg.UserID, reg.AccessToken
	traffic := func() {
		room, err := cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.SendText(ctx, room.RoomID, "hello"); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.FullSyncRequest(ctx, mautrix.ReqSync{}); err != nil {
			t.Fatal(err)
		}
	}
	traffic()

	fams := scrape(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	// Families with a sample only once this server has sent to another
	// (their names are checked in package metrics' tests instead).
	federationOnly := map[string]bool{"hearth_federation_transactions_total": true,
		"hearth_federation_transaction_duration_seconds": true, "hearth_federation_queue_destination_pdus": true}
	for title, exprs := range queries {
		for _, e := range exprs {
			for _, name := range metricNameRe.FindAllString(e, -1) {
				base := name
				for _, suffix := range []string{"_bucket", "_count", "_sum"} {
					if b, ok := strings.CutSuffix(name, suffix); ok && fams[b] != nil {
						base = b
					}
				}
				if fams[base] == nil && !federationOnly[strings.TrimSuffix(base, "_bucket")] {
					t.Errorf("panel %q queries %s, which the metrics listener does not serve", title, name)
				}
			}
		}
	}

	prom, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus not installed (apt-get install prometheus): queries not run")
	}
	dir := t.TempDir()
	promPort := freePort(t)
	promCfg := fmt.Sprintf("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: hearth\n    static_configs:\n      - targets: ['127.0.0.1:%d']\n", port)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(promCfg), 0o600); err != nil {
		t.Fatal(err)
	}
	pctx, stop := context.WithCancel(ctx)
	cmd := exec.CommandContext(pctx, prom, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", promPort))
	var plog strings.Builder
	cmd.Stdout, cmd.Stderr = &plog, &plog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stop()
		cmd.Wait()
	})
	api := fmt.Sprintf("http://127.0.0.1:%d/api/v1/query", promPort)
	query := func(q string) (status string, n int, errText string) {
		resp, err := http.Get(api + "?query=" + url.QueryEscape(q))
		if err != nil {
			return "", 0, err.Error()
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var body struct {
			Status string `json:"status"`
			Error  string `json:"error"`
			Data   struct {
				Result []json.RawMessage `json:"result"`
			} `json:"data"`
		}
		json.Unmarshal(raw, &body)
		return body.Status, len(body.Data.Result), body.Error
	}
	// Wait for a few scrapes (rate() needs two samples), with traffic
	// between them.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		if _, n, _ := query(`count_over_time(up{job="hearth"}[1m]) >= 4`); n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus did not scrape hearth:\n%s", plog.String())
		}
		traffic()
	}
	traffic()
	time.Sleep(1500 * time.Millisecond)
	mayBeEmpty := regexp.MustCompile(`hearth_federation_transaction|status=~"5\.\."|destination_pdus`)
	for title, exprs := range queries {
		for _, e := range exprs {
			q := strings.ReplaceAll(e, "$instance", ".*")
			status, n, errText := query(q)
			if status != "success" {
				t.Errorf("panel %q: %s: %s %s", title, e, status, errText)
				continue
			}
			if n == 0 && !mayBeEmpty.MatchString(e) {
				t.Errorf("panel %q: %s returned no data", title, e)
			}
		}
	}
}
