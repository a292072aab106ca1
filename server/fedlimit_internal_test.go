package server

import (
	"context"
	"errors"
	"testing"
	"time"

	"hearth/server/matrix"
)

func TestOriginLimits(t *testing.T) {
	var l originLimits
	ctx := context.Background()
	var frees []func()
	for i := 0; i < fedConcurrent; i++ {
		free, err := l.acquire(ctx, "busy.example")
		if err != nil {
			t.Fatal(err)
		}
		frees = append(frees, free)
	}
	// The next one waits for a slot.
	got := make(chan func(), 1)
	go func() {
		free, err := l.acquire(ctx, "busy.example")
		if err == nil {
			got <- free
		}
	}()
	select {
	case <-got:
		t.Fatal("a fourth concurrent request was let through")
	case <-time.After(50 * time.Millisecond):
	}
	// Another origin is not held up.
	other, err := l.acquire(ctx, "calm.example")
	if err != nil {
		t.Fatal(err)
	}
	other()
	frees[0]()
	select {
	case free := <-got:
		free()
	case <-time.After(time.Second):
		t.Fatal("a waiting request never got the freed slot")
	}
	// Beyond the queue the origin is told to slow down: two requests are
	// in flight (frees[1:]); fill the rest of the slots and the queue.
	waitCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i := 0; i < fedConcurrent+fedQueued-2; i++ {
		go l.acquire(waitCtx, "busy.example")
	}
	time.Sleep(50 * time.Millisecond)
	var me *matrix.Error
	if _, err := l.acquire(ctx, "busy.example"); !errors.As(err, &me) || me.Code != "M_LIMIT_EXCEEDED" {
		t.Errorf("a request beyond the queue: %v", err)
	}
	cancel()
	for _, f := range frees[1:] {
		f()
	}
}
