package servertest

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
)

// ErrorLog is a slog.Handler that keeps what is logged at error level,
// and any line naming a PostgreSQL error (SQLSTATE): input the store
// could not take, which some handlers only log (an EDU ignored). Tests
// that feed a server hostile input start it with one (StartWith) and
// check that Lines is empty.
type ErrorLog struct {
	mu  sync.Mutex
	got []string
}

// Enabled is true at every level: a line below error level is kept when
// it names a PostgreSQL error.
func (l *ErrorLog) Enabled(context.Context, slog.Level) bool { return true }

// Handle keeps r's message and attributes when they count.
func (l *ErrorLog) Handle(_ context.Context, r slog.Record) error {
	l.keep(r, nil)
	return nil
}

// keep keeps r, with the attributes of the logger it came through, when
// it is at error level or names a PostgreSQL error. Most records are
// neither (every request is logged at debug level): they are passed over
// without being formatted.
func (l *ErrorLog) keep(r slog.Record, with []slog.Attr) {
	if r.Level < slog.LevelError {
		named := false
		r.Attrs(func(a slog.Attr) bool {
			if k := a.Value.Kind(); k == slog.KindString || k == slog.KindAny {
				named = strings.Contains(a.Value.String(), "SQLSTATE")
			}
			return !named
		})
		if !named && !strings.Contains(r.Message, "SQLSTATE") {
			return
		}
	}
	line := r.Message
	r.Attrs(func(a slog.Attr) bool { line += " " + a.String(); return true })
	for _, a := range with {
		line += " " + a.String()
	}
	l.mu.Lock()
	l.got = append(l.got, line)
	l.mu.Unlock()
}

// WithAttrs is a view of l that adds as to every line.
func (l *ErrorLog) WithAttrs(as []slog.Attr) slog.Handler {
	return &errorLogView{l: l, attrs: as}
}

// WithGroup is l: groups do not matter to what is kept.
func (l *ErrorLog) WithGroup(string) slog.Handler { return l }

// Lines is what was kept, in order.
func (l *ErrorLog) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.got)
}

// errorLogView is an ErrorLog with attributes of its own (a logger made
// With them), written to the same list.
type errorLogView struct {
	l     *ErrorLog
	attrs []slog.Attr
}

func (v *errorLogView) Enabled(ctx context.Context, lv slog.Level) bool { return v.l.Enabled(ctx, lv) }

func (v *errorLogView) Handle(_ context.Context, r slog.Record) error {
	v.l.keep(r, v.attrs)
	return nil
}

func (v *errorLogView) WithAttrs(as []slog.Attr) slog.Handler {
	return &errorLogView{l: v.l, attrs: append(slices.Clone(v.attrs), as...)}
}

func (v *errorLogView) WithGroup(string) slog.Handler { return v }
