// Package pgcluster runs a throwaway PostgreSQL cluster for tests that must
// stop, crash or restart the server, which the shared test server must never
// undergo.
//
// Start runs initdb into a temporary directory (as the postgres OS user
// through runuser when the test runs as root), starts the server on a free
// port of 127.0.0.1 with its unix socket in that directory, and removes it
// all when the test ends, also when the test fails:
//
//	c := pgcluster.Start(t)
//	db := openDB(t, c.URL())
//	require.NoError(t, c.Restart(pgcluster.Immediate)) // a crash and recovery
//
// The binaries come from CANONLOG_PG_BINDIR, else `pg_config --bindir`, else
// the newest /usr/lib/postgresql/*/bin. When they are missing the test
// skips with a one-line reason, unless CANONLOG_REQUIRE_POSTGRES=1, where it
// fails (the rule of internal/dbtest).
package pgcluster

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/canonlog/canonlog/internal/dbtest"
)

// Mode is a pg_ctl shutdown mode.
type Mode string

const (
	// Fast disconnects clients (FATAL 57P01 admin_shutdown), rolls back
	// their transactions and shuts down cleanly.
	Fast Mode = "fast"
	// Immediate kills every server process at once, as a crash would; the
	// next start runs crash recovery.
	Immediate Mode = "immediate"
)

// Cluster is one running (or stopped) throwaway server.
type Cluster struct {
	bindir string
	dir    string // everything: data, socket, log
	data   string
	log    string
	port   int
	runAs  string // OS user that runs the binaries; "" for the current one

	mu      sync.Mutex
	running bool
}

// Start creates and starts a cluster, stopped and removed when t ends.
func Start(t testing.TB) *Cluster {
	t.Helper()
	bindir, err := findBindir()
	if err != nil {
		if dbtest.RequirePostgres() {
			t.Fatalf("pgcluster: PostgreSQL binaries required (CANONLOG_REQUIRE_POSTGRES=1): %v", err)
		}
		t.Skipf("pgcluster: PostgreSQL binaries not found, skipping (set CANONLOG_PG_BINDIR): %v", err)
	}
	c, err := start(bindir)
	if c != nil {
		t.Cleanup(c.remove)
	}
	if err != nil {
		t.Fatalf("pgcluster: %v", err)
	}
	return c
}

// URL returns a lib/pq URL for the cluster's postgres database as the
// superuser postgres (trust authentication).
func (c *Cluster) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
}

// Dir returns the directory holding the cluster's data, socket and log.
func (c *Cluster) Dir() string { return c.dir }

// Port returns the TCP port the server listens on (127.0.0.1 only).
func (c *Cluster) Port() int { return c.port }

// Stop shuts the server down in mode.
func (c *Cluster) Stop(mode Mode) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running {
		return errors.New("pgcluster: stop: not running")
	}
	if err := c.pgCtl("stop", "-m", string(mode)); err != nil {
		return err
	}
	c.running = false
	return nil
}

// Resume starts a stopped server again on the same port and data, and
// waits until it accepts connections (after crash recovery, if any).
func (c *Cluster) Resume() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running {
		return errors.New("pgcluster: start: already running")
	}
	if err := c.pgCtl("start", "-l", c.log); err != nil {
		return err
	}
	c.running = true
	return nil
}

// Restart stops the server in mode and starts it again.
func (c *Cluster) Restart(mode Mode) error {
	if err := c.Stop(mode); err != nil {
		return err
	}
	return c.Resume()
}

func start(bindir string) (*Cluster, error) {
	runAs, err := osUser()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "canonlog-pgcluster-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{bindir: bindir, dir: dir, data: filepath.Join(dir, "data"), log: filepath.Join(dir, "server.log"), runAs: runAs}
	if runAs != "" {
		u, err := user.Lookup(runAs)
		if err != nil {
			return c, err
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return c, err
		}
	}
	if err := c.run("initdb", "-D", c.data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
		"--no-sync", "--no-instructions"); err != nil {
		return c, err
	}
	// A port picked free may be taken before the server binds it: try a
	// few.
	for attempt := 0; ; attempt++ {
		if c.port, err = freePort(); err != nil {
			return c, err
		}
		// fsync=off: the data is thrown away and the OS does not crash; an
		// immediate shutdown still loses nothing acknowledged, because
		// synchronous_commit stays on (the commit's WAL reaches the OS
		// before the client hears of it).
		conf := fmt.Sprintf("\nport = %d\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\nfsync = off\nfull_page_writes = off\nmax_connections = 40\nshared_buffers = 16MB\n",
			c.port, c.dir)
		if err := os.WriteFile(filepath.Join(c.data, "postgresql.auto.conf"), []byte(conf), 0o600); err != nil {
			return c, err
		}
		err = c.Resume()
		if err == nil {
			return c, nil
		}
		if attempt == 2 || !strings.Contains(err.Error(), "could not bind") {
			return c, err
		}
	}
}

// remove stops the server if it runs and deletes the directory.
func (c *Cluster) remove() {
	c.mu.Lock()
	running := c.running
	c.mu.Unlock()
	if running || fileExists(filepath.Join(c.data, "postmaster.pid")) {
		_ = c.pgCtl("stop", "-m", string(Immediate))
	}
	_ = os.RemoveAll(c.dir)
}

func (c *Cluster) pgCtl(args ...string) error {
	return c.run("pg_ctl", append([]string{"-D", c.data, "-w", "-t", "60"}, args...)...)
}

// run runs one of the cluster binaries as c.runAs; its error carries the
// output and the end of the server log.
func (c *Cluster) run(name string, args ...string) error {
	path := filepath.Join(c.bindir, name)
	var cmd *exec.Cmd
	if c.runAs != "" {
		cmd = exec.Command("runuser", append([]string{"-u", c.runAs, "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = c.dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %v: %s%s", name, strings.Join(args, " "), err,
			strings.TrimSpace(out.String()), c.logTail())
	}
	return nil
}

func (c *Cluster) logTail() string {
	b, err := os.ReadFile(c.log)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return "\nserver log:\n" + string(b)
}

// osUser returns the OS user to run the binaries as: postgres when running
// as root (initdb and postgres refuse root), else the current user ("").
func osUser() (string, error) {
	if os.Geteuid() != 0 {
		return "", nil
	}
	if _, err := exec.LookPath("runuser"); err != nil {
		return "", fmt.Errorf("running as root needs runuser to start PostgreSQL as the postgres user: %v", err)
	}
	if _, err := user.Lookup("postgres"); err != nil {
		return "", fmt.Errorf("running as root needs an OS user postgres to run PostgreSQL: %v", err)
	}
	return "postgres", nil
}

func findBindir() (string, error) {
	var tried []string
	ok := func(dir string) bool {
		tried = append(tried, dir)
		return fileExists(filepath.Join(dir, "initdb")) && fileExists(filepath.Join(dir, "pg_ctl"))
	}
	if dir := os.Getenv("CANONLOG_PG_BINDIR"); dir != "" {
		if ok(dir) {
			return dir, nil
		}
		return "", fmt.Errorf("CANONLOG_PG_BINDIR=%s holds no initdb and pg_ctl", dir)
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); ok(dir) {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return versionOf(b) - versionOf(a) })
	for _, dir := range dirs {
		if ok(dir) {
			return dir, nil
		}
	}
	return "", fmt.Errorf("no initdb and pg_ctl in %v", tried)
}

func versionOf(bindir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(bindir)))
	return v
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
