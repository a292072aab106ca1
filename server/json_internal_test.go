package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"hearth/server/metrics"
)

// TestWriteJSONStreams: writeJSON writes what json.Marshal makes (HTML
// characters escaped, raw JSON compacted), also for an answer far larger
// than the encoder's buffer, without ever writing it in one piece; an
// encoding error before anything went out is returned for the caller's
// 500, with nothing written.
func TestWriteJSONStreams(t *testing.T) {
	big := make([]json.RawMessage, 5000)
	for i := range big {
		big[i] = json.RawMessage(`{ "type": "m.room.message", "content": {"body": "<b>&` + strings.Repeat("x", i%300) + `"} }`)
	}
	for name, v := range map[string]any{
		"small": map[string]any{"a": "<&>", "raw": json.RawMessage(`{ "k" : [1, 2] }`), "n": nil},
		"big":   map[string]any{"chunk": big, "end": "t1-2"},
	} {
		t.Run(name, func(t *testing.T) {
			want, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			rec := &writeRecorder{ResponseRecorder: httptest.NewRecorder()}
			if err := writeJSON(rec, http.StatusCreated, v); err != nil {
				t.Fatal(err)
			}
			if rec.Code != http.StatusCreated || rec.Header().Get("Content-Type") != "application/json" {
				t.Errorf("status %d, content type %q", rec.Code, rec.Header().Get("Content-Type"))
			}
			if !bytes.Equal(rec.Body.Bytes(), want) {
				t.Errorf("body differs from json.Marshal's:\n%.300s\n%.300s", rec.Body.Bytes(), want)
			}
			if name == "big" && rec.largest >= len(want)/4 {
				t.Errorf("largest write %d bytes of %d: not streamed", rec.largest, len(want))
			}
		})
	}
	rec := httptest.NewRecorder()
	if err := writeJSON(rec, http.StatusOK, map[string]float64{"x": math.NaN()}); err == nil {
		t.Error("NaN: no error")
	}
	if rec.Body.Len() != 0 || rec.Header().Get("Content-Type") != "" {
		t.Errorf("an answer that failed to encode was written: %q", rec.Body.String())
	}
}

type writeRecorder struct {
	*httptest.ResponseRecorder
	largest int
}

func (w *writeRecorder) Write(p []byte) (int, error) {
	w.largest = max(w.largest, len(p))
	return w.ResponseRecorder.Write(p)
}

// TestPlaces: at most n holders at once; a waiter gets a place when one is
// given back, and gives up when its context ends; giving back twice gives
// back one place.
func TestPlaces(t *testing.T) {
	p := newPlaces(2)
	ctx := context.Background()
	r1, err := p.take(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := p.take(ctx)
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := p.take(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third place while two are held: %v", err)
	}
	got := make(chan func())
	go func() {
		r, _ := p.take(ctx)
		got <- r
	}()
	r1()
	r1() // a second call gives nothing back
	r3 := <-got
	short2, cancel2 := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel2()
	if _, err := p.take(short2); err == nil {
		t.Fatal("a place given back twice counted twice")
	}
	r2()
	r3()
	if len(p) != 0 {
		t.Errorf("%d places still held", len(p))
	}
}

// TestAppendUnsigned: an event's unsigned written by hand is byte for byte
// what json.Marshal makes of the map, for the plain values it handles
// (HTML characters, quotes, control characters and non-ASCII included) and
// for those it hands to json.Marshal.
func TestAppendUnsigned(t *testing.T) {
	for _, u := range []map[string]any{
		{},
		{"age": int64(0)},
		{"age": int64(1234), "membership": "join"},
		{"age": int64(-5), "membership": "leave", "transaction_id": "m1.2"},
		{"age": int64(7), "transaction_id": `<a href="x">&amp;</a>\ "q"`},
		{"age": int64(7), "transaction_id": "tab\there\nnul\x00 é ☃ \u2028"},
		{"age": int64(7), "org.matrix.msc4140.delay_id": "syd_abc", "membership": "invite"},
		{"age": int64(7), "replaces_state": "$ev:x", "prev_sender": "@a:x", "prev_content": json.RawMessage(`{"membership":"join"}`)},
		{"age": int64(7), "m.relations": map[string]any{"m.thread": map[string]any{"count": 2}}},
	} {
		want, err := json.Marshal(u)
		if err != nil {
			t.Fatal(err)
		}
		got, err := appendUnsigned([]byte("prefix"), u)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "prefix"+string(want) {
			t.Errorf("appendUnsigned(%v) = %s, want %s", u, got[len("prefix"):], want)
		}
	}
}

// TestAbortedAnswerIsLogged: an answer that fails after its first bytes
// went out cuts the client's connection (it must not take the part for a
// whole answer), is counted, and its error is logged with the request's
// path; a client that went away is logged at debug level only.
func TestAbortedAnswerIsLogged(t *testing.T) {
	var logged bytes.Buffer
	s := &Server{log: slog.New(slog.NewTextHandler(&logged, nil)), metrics: metrics.New()}
	cause := errors.New("disk on fire")
	mux := http.NewServeMux()
	mux.HandleFunc("/fails", func(w http.ResponseWriter, r *http.Request) {
		_ = writeJSON(w, http.StatusOK, []any{strings.Repeat("x", 64<<10), failingMarshaler{cause}})
	})
	mux.HandleFunc("/canceled", func(w http.ResponseWriter, r *http.Request) {
		_ = writeJSON(w, http.StatusOK, []any{strings.Repeat("x", 64<<10), failingMarshaler{context.Canceled}})
	})
	srv := httptest.NewServer(s.requestLog(mux))
	defer srv.Close()

	for _, path := range []string{"/fails", "/canceled"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Fatalf("%s: a whole answer of %d bytes; want the connection cut", path, len(body))
		}
	}
	out := logged.String()
	if !strings.Contains(out, `level=ERROR msg="answer cut off after it had started"`) || !strings.Contains(out, "path=/fails err=") || !strings.Contains(out, "disk on fire") {
		t.Fatalf("the error was not logged:\n%s", out)
	}
	if strings.Contains(out, "/canceled") {
		t.Fatalf("a client gone away was logged above debug level:\n%s", out)
	}
	families, err := s.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counted := 0.0
	for _, f := range families {
		if f.GetName() == "hearth_http_requests_total" {
			for _, m := range f.GetMetric() {
				counted += m.GetCounter().GetValue()
			}
		}
	}
	if counted != 2 {
		t.Fatalf("%v requests counted, want the 2 aborted ones", counted)
	}
}

type failingMarshaler struct{ err error }

func (f failingMarshaler) MarshalJSON() ([]byte, error) { return nil, f.err }
