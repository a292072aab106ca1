package server

import (
	"bytes"
	"context"
	"log/slog"
	"testing"
)

// countingHandler counts the WithAttrs calls that reach the real handler:
// each is a formatting of attributes.
type countingHandler struct {
	slog.Handler
	withAttrs *int
}

func (c countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	*c.withAttrs++
	return countingHandler{c.Handler.WithAttrs(as), c.withAttrs}
}

func (c countingHandler) WithGroup(name string) slog.Handler {
	return countingHandler{c.Handler.WithGroup(name), c.withAttrs}
}

func textHandler(buf *bytes.Buffer) slog.Handler {
	return slog.NewTextHandler(buf, &slog.HandlerOptions{
		Level: slog.LevelInfo,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
}

// A request's logger writes what the eager one wrote, attributes, groups
// and order alike.
func TestLazyAttrsSameOutput(t *testing.T) {
	var eagerBuf, lazyBuf bytes.Buffer
	eager := slog.New(textHandler(&eagerBuf)).With("request_id", "abc")
	lazy := lazyLogger(textHandler(&lazyBuf), slog.String("request_id", "abc"))
	for _, l := range []*slog.Logger{eager, lazy} {
		l = l.With("user_id", "@u:hs")
		l.Info("first", "n", 1)
		l.Debug("hidden", "n", 2)
		g := l.WithGroup("g").With("k", "v")
		g.Warn("grouped", "n", 3)
		l.With().Error("last", slog.Group("h", "x", 4))
	}
	if eagerBuf.String() != lazyBuf.String() {
		t.Fatalf("lazy logger wrote\n%s\nthe eager one\n%s", lazyBuf.String(), eagerBuf.String())
	}
	if eagerBuf.Len() == 0 || bytes.Contains(lazyBuf.Bytes(), []byte("hidden")) {
		t.Fatalf("unexpected output:\n%s", lazyBuf.String())
	}
}

// Nothing is formatted for a request that logs nothing.
func TestLazyAttrsFormatOnlyWhenLogged(t *testing.T) {
	var buf bytes.Buffer
	n := 0
	h := countingHandler{textHandler(&buf), &n}
	l := lazyLogger(h, slog.String("request_id", "abc")).With("user_id", "@u:hs")
	l.Debug("below the level")
	if !l.Enabled(context.Background(), slog.LevelInfo) || l.Enabled(context.Background(), slog.LevelDebug) {
		t.Fatal("Enabled does not follow the handler's level")
	}
	if n != 0 || buf.Len() != 0 {
		t.Fatalf("%d formattings and %q before anything was logged", n, buf.String())
	}
	l.Info("logged")
	if n != 1 || !bytes.Contains(buf.Bytes(), []byte("request_id=abc user_id=@u:hs")) {
		t.Fatalf("%d formattings, wrote %q", n, buf.String())
	}
}

// BenchmarkRequestLogger is what every request pays for its logger:
// request_id, then user_id, then one debug line below the level.
func BenchmarkRequestLogger(b *testing.B) {
	var buf bytes.Buffer
	h := textHandler(&buf)
	b.Run("eager", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			l := slog.New(h).With("request_id", "0123456789abcdef").With("user_id", "@user0001:localhost")
			l.Debug("request", "status", 200)
		}
	})
	b.Run("lazy", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			l := lazyLogger(h, slog.String("request_id", "0123456789abcdef")).With("user_id", "@user0001:localhost")
			l.Debug("request", "status", 200)
		}
	})
}
