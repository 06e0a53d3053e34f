package peers

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/canonlog/canonlog/internal/redact"
)

// delayProxy forwards TCP connections to a server, holding every chunk of
// bytes for a delay in each direction: the server as if across a network.
// Every side connects through it, so they pay the same round trips.
type delayProxy struct {
	ln     net.Listener
	target string
	delay  time.Duration
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

// startDelayProxy listens on a loopback port and forwards to target
// (host:port).
func startDelayProxy(target string, delay time.Duration) (*delayProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &delayProxy{ln: ln, target: target, delay: delay}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *delayProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(s, c)
		go p.pipe(c, s)
	}
}

// pipe copies src to dst, each chunk after the delay. Chunks keep their
// order; a chunk read while an earlier one waits waits no longer than it.
func (p *delayProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	type chunk struct {
		b  []byte
		at time.Time
	}
	ch := make(chan chunk, 64)
	go func() {
		defer close(ch)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				ch <- chunk{buf[:n], time.Now().Add(p.delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		time.Sleep(time.Until(c.at))
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	for range ch {
	}
}

// url returns u with its host and port replaced by the proxy's.
func (p *delayProxy) url(u string) (string, error) {
	parsed, err := url.Parse(u)
	if err != nil {
		return "", fmt.Errorf("database URL %s: %w", redact.URL(u), err)
	}
	parsed.Host = p.ln.Addr().String()
	return parsed.String(), nil
}

// roundTrip measures the median time of an empty query through the proxy.
func (p *delayProxy) roundTrip(ctx context.Context, dbURL string) (time.Duration, error) {
	u, err := p.url(dbURL)
	if err != nil {
		return 0, err
	}
	db, err := sql.Open("postgres", u)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	if err := db.PingContext(ctx); err != nil {
		return 0, redact.Error(err, u)
	}
	var rtts []time.Duration
	for range 21 {
		start := time.Now()
		if _, err := db.ExecContext(ctx, `SELECT 1`); err != nil {
			return 0, redact.Error(err, u)
		}
		rtts = append(rtts, time.Since(start))
	}
	slices.Sort(rtts)
	return rtts[len(rtts)/2], nil
}

// Close stops the proxy and its connections.
func (p *delayProxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
		err = nil
	}
	return err
}

// target returns the host:port a postgres:// URL names, with PostgreSQL's
// defaults.
func target(dbURL string) (string, error) {
	u, err := url.Parse(dbURL)
	if err != nil {
		return "", fmt.Errorf("database URL %s: %w", redact.URL(dbURL), err)
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return "", fmt.Errorf("database URL %s: -latency needs a host in the URL (a TCP connection)", redact.URL(dbURL))
	}
	if port == "" {
		port = "5432"
	}
	return net.JoinHostPort(host, port), nil
}
