//go:build linux

package evloop

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// on runs f on l's goroutine and waits for it.
func on(l *Loop, f func()) {
	done := make(chan struct{})
	l.Post(func() { f(); close(done) })
	<-done
}

// TestDeadlinesFireInOrderOnTheLoop sets deadlines in a shuffled order,
// moves some, stops others: each one left fires once, not before its
// time, in the order of the times; the stopped ones never do (a second
// Done would panic the wait group).
func TestDeadlinesFireInOrderOnTheLoop(t *testing.T) {
	l := Loops()[0]
	const n = 200
	start := time.Now()
	var (
		mu    sync.Mutex
		fired []int
		early []int
	)
	ds := make([]Deadline, n)
	at := make([]time.Time, n)
	var wg sync.WaitGroup
	on(l, func() {
		for _, i := range rand.Perm(n) {
			at[i] = start.Add(time.Duration(20+i/2) * time.Millisecond)
			ds[i].Calls(func() {
				now := time.Now()
				mu.Lock()
				fired = append(fired, i)
				if now.Before(at[i]) {
					early = append(early, i)
				}
				mu.Unlock()
				wg.Done()
			})
			wg.Add(1)
			l.SetDeadline(&ds[i], at[i].Add(-5*time.Millisecond)) // moved later below
		}
		for i := range n {
			l.SetDeadline(&ds[i], at[i])
		}
		// Every third is stopped; they never fire.
		for i := 0; i < n; i += 3 {
			l.StopDeadline(&ds[i])
			wg.Done()
		}
	})
	waitGroup(t, &wg, 5*time.Second)
	time.Sleep(50 * time.Millisecond) // a stopped one would fire by now
	mu.Lock()
	defer mu.Unlock()
	var want []int
	for i := range n {
		if i%3 != 0 {
			want = append(want, i)
		}
	}
	// Equal times may fire in either order: the order is checked below.
	got := slices.Clone(fired)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("fired %d deadlines %v, want %d: %v", len(fired), fired, len(want), want)
	}
	for k := 1; k < len(fired); k++ {
		if at[fired[k]].Before(at[fired[k-1]]) {
			t.Fatalf("deadline %d fired after %d, whose time is later", fired[k], fired[k-1])
		}
	}
	if len(early) > 0 {
		t.Fatalf("deadlines %v fired before their time", early)
	}
	on(l, func() {
		if len(l.dl.heap) != 0 {
			t.Errorf("%d deadlines left in the loop", len(l.dl.heap))
		}
	})
}

// TestDeadlineSetEarlierMovesTheTimer: a deadline set before the armed
// timer's time fires at its own time, not the timer's; one set again from
// its own function fires again.
func TestDeadlineSetEarlierMovesTheTimer(t *testing.T) {
	l := Loops()[0]
	var late, soon Deadline
	fired := make(chan time.Time, 4)
	again := 0
	late.Calls(func() { fired <- time.Time{} })
	soon.Calls(func() {
		fired <- time.Now()
		if again++; again < 2 {
			l.SetDeadline(&soon, time.Now().Add(10*time.Millisecond))
		}
	})
	start := time.Now()
	on(l, func() {
		l.SetDeadline(&late, start.Add(time.Hour))
		l.SetDeadline(&soon, start.Add(20*time.Millisecond))
	})
	for k := range 2 {
		select {
		case at := <-fired:
			if at.IsZero() {
				t.Fatal("the deadline an hour away fired")
			}
			if d := at.Sub(start); d < 20*time.Millisecond || d > 2*time.Second {
				t.Fatalf("firing %d came %v after the start, want 20 ms (+10 ms the second time)", k, d)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("firing %d of the early deadline did not come", k)
		}
	}
	on(l, func() { l.StopDeadline(&late) })
}

func waitGroup(t *testing.T, wg *sync.WaitGroup, d time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatal("deadlines did not fire in time")
	}
}

// TestDeadlineOfAWallClockTime: a time without a monotonic reading (as a
// tunnel's deadlines, kept in unix nanoseconds) fires as far from now as
// time.Until says, like one with it.
func TestDeadlineOfAWallClockTime(t *testing.T) {
	l := Loops()[0]
	var wall, mono Deadline
	fired := make(chan string, 2)
	wall.Calls(func() { fired <- "wall" })
	mono.Calls(func() { fired <- "mono" })
	start := time.Now()
	on(l, func() {
		l.SetDeadline(&wall, time.Unix(0, start.Add(30*time.Millisecond).UnixNano()))
		l.SetDeadline(&mono, start.Add(60*time.Millisecond))
	})
	for _, want := range []string{"wall", "mono"} {
		select {
		case got := <-fired:
			if d := time.Since(start); got != want || d < 30*time.Millisecond {
				t.Fatalf("%s fired %v after the start, want %s (30 ms, then 60 ms)", got, d, want)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("%s did not fire", want)
		}
	}
}
