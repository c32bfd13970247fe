package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"nixbus.dev/nixbus/pkg/bus"
	nixbuspb "nixbus.dev/nixbus/proto/nixbus/v1"
)

// liveLog tails a build's live log as Server-Sent Events:
//
//	event: chunk  data: "<text>"        (a JSON string)
//	event: reset  data: {}              (a newer attempt started: clear)
//	event: end    data: {"truncated":b} (the attempt ended)
//
// Chunks of older attempts are replaced by the newest one's. The
// connection ends at "end", when the client leaves, or on shutdown.
func (s *Service) liveLog(w http.ResponseWriter, r *http.Request, _ user) {
	id, drv := r.PathValue("run"), r.PathValue("drv")
	if !bus.ValidRunID(id) || !drvBaseRe.MatchString(drv) {
		http.Error(w, "no such log", http.StatusNotFound)
		return
	}
	// ?restart=N follows the rebuild a RestartJob at sequence N released.
	minRestart, _ := strconv.ParseUint(r.URL.Query().Get("restart"), 10, 64)
	select {
	case s.live <- struct{}{}:
		defer func() { <-s.live }()
	default:
		http.Error(w, "too many live logs followed; try again later", http.StatusServiceUnavailable)
		return
	}
	s.metrics.liveClients.Inc()
	defer s.metrics.liveClients.Dec()
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	ctx := r.Context()
	cons, err := s.js.OrderedConsumer(ctx, bus.StreamLogs, jetstream.OrderedConsumerConfig{FilterSubjects: []string{bus.LogSubject(id, drv)}})
	if err != nil {
		http.Error(w, "log stream unavailable", http.StatusServiceUnavailable)
		return
	}
	chunks := make(chan *nixbuspb.LogChunk, 16)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var c nixbuspb.LogChunk
		if bus.Decode(m.Data(), &c) != nil || c.GetRestartSeq() < minRestart {
			return
		}
		select {
		case chunks <- &c:
		case <-ctx.Done():
		}
	})
	if err != nil {
		http.Error(w, "log stream unavailable", http.StatusServiceUnavailable)
		return
	}
	defer func() {
		cc.Stop()
		<-cc.Closed()
	}()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 3000\n\n")
	flusher.Flush()

	t := time.NewTicker(s.cfg.Heartbeat)
	defer t.Stop()
	type attempt struct{ restart, delivery uint64 }
	var cur *attempt
	var carry []byte // an incomplete UTF-8 sequence cut by a chunk
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fmt.Fprint(w, ": keep-alive\n\n")
			flusher.Flush()
		case c := <-chunks:
			a := attempt{c.GetRestartSeq(), c.GetDelivery()}
			if cur != nil && *cur != a {
				if a.restart < cur.restart || a.restart == cur.restart && a.delivery < cur.delivery {
					continue // an older attempt's straggler
				}
				fmt.Fprint(w, "event: reset\ndata: {}\n\n")
				carry = nil
			}
			cur = &a
			data := append(carry, c.GetData()...)
			carry = nil
			if !c.GetFinal() {
				data, carry = splitUTF8(data)
			}
			if len(data) > 0 {
				text, _ := json.Marshal(string(data)) // invalid UTF-8 becomes U+FFFD
				fmt.Fprintf(w, "event: chunk\ndata: %s\n\n", text)
			}
			if c.GetFinal() {
				fmt.Fprintf(w, "event: end\ndata: {\"truncated\":%t}\n\n", c.GetTruncated())
				flusher.Flush()
				return
			}
			flusher.Flush()
		}
	}
}

// splitUTF8 cuts off an incomplete UTF-8 sequence at the end of b.
func splitUTF8(b []byte) (whole, rest []byte) {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return b[:i], append([]byte(nil), b[i:]...)
			}
			break
		}
	}
	return b, nil
}
