package scratchdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/redact"
)

// DefaultPrefix is the prefix of a Set made without one.
const DefaultPrefix = "canonlog_scratch"

// MaxPrefixLen is the longest prefix New accepts: the prefix, the random
// part and a database's number must fit PostgreSQL's 63-byte identifiers.
const MaxPrefixLen = 40

// dropTimeout bounds Close and Drop, which run with a context of their
// own: they are the cleanup after an interrupt too.
const dropTimeout = time.Minute

var validPrefix = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// Config configures a Set. A nil *Config takes every default.
type Config struct {
	// Prefix begins the set's name, which is Prefix, an underscore and 12
	// random hex digits; its databases are the name, an underscore and a
	// number (PostgreSQL schemas), or files in a directory named after it
	// with dashes for underscores (SQLite). Lowercase letters, digits and
	// underscores, starting with a letter, at most MaxPrefixLen bytes.
	// Defaults to DefaultPrefix.
	Prefix string

	// Dir is the directory in which a SQLite set makes its own. Defaults
	// to the directory of the base URL's file for sqlite:PATH, so that the
	// scratch databases share its disk, and to os.TempDir() for
	// sqlite::memory: and file: URLs. Not used on PostgreSQL.
	Dir string
}

// Set is a group of scratch databases. Its methods may be called
// concurrently.
type Set struct {
	dialect eventlog.Backend
	name    string
	base    string   // the base URL, for PostgreSQL databases' URLs and errors
	admin   *sqlx.DB // PostgreSQL: runs CREATE and DROP SCHEMA
	dir     string   // SQLite: the set's directory

	mu     sync.Mutex
	n      int
	dbs    []*DB
	closed bool
}

// DB is one scratch database of a Set.
type DB struct {
	// URL opens the database: the base URL with search_path pinned to the
	// schema (PostgreSQL), or sqlite:FILE.
	URL string
	// Name is the schema (PostgreSQL) or the file (SQLite).
	Name string

	set     *Set
	dropped bool // guarded by set.mu
}

// New returns a Set of scratch databases next to the database named by
// baseURL: postgres://… or postgresql://… (schemas in that database; the
// URL's user needs the right to create them), sqlite:PATH, sqlite::memory:
// or file:… (files in a new directory, see Config.Dir). On SQLite it makes
// the directory; on PostgreSQL it connects to nothing yet.
func New(baseURL string, cfg *Config) (*Set, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if !validPrefix.MatchString(c.Prefix) || len(c.Prefix) > MaxPrefixLen {
		return nil, fmt.Errorf("scratchdb: prefix %q: use lowercase letters, digits and underscores, starting with a letter, at most %d bytes", c.Prefix, MaxPrefixLen)
	}
	name := NewName(c.Prefix)
	switch {
	case strings.HasPrefix(baseURL, "postgres://"), strings.HasPrefix(baseURL, "postgresql://"):
		if _, err := url.Parse(baseURL); err != nil {
			// *url.Error quotes the whole URL, password included.
			return nil, fmt.Errorf("database URL %s is malformed: %s", redact.URL(baseURL), redact.ParseReason(err))
		}
		admin, err := sqlx.Open("postgres", baseURL)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", redact.URL(baseURL), redact.Error(err, baseURL))
		}
		// Used only to create and drop: hold no connection in between.
		admin.SetMaxOpenConns(1)
		admin.SetMaxIdleConns(0)
		return &Set{dialect: eventlog.Postgres, name: name, base: baseURL, admin: admin}, nil
	case strings.HasPrefix(baseURL, "sqlite:"), strings.HasPrefix(baseURL, "file:"):
		parent := c.Dir
		if parent == "" {
			parent = os.TempDir()
			if path, ok := eventlog.SQLiteFile(baseURL); ok {
				parent = filepath.Dir(path)
			}
		}
		dir, err := os.MkdirTemp(parent, strings.ReplaceAll(name, "_", "-")+"-")
		if err != nil {
			return nil, fmt.Errorf("scratch directory for SQLite: %w", err)
		}
		return &Set{dialect: eventlog.SQLite, name: name, base: baseURL, dir: dir}, nil
	default:
		return nil, fmt.Errorf("database URL %s: unknown scheme: use postgres://…, postgresql://…, sqlite:PATH, sqlite::memory: or file:…", redact.URL(baseURL))
	}
}

// NewName returns prefix, an underscore and 12 random hex digits.
func NewName(prefix string) string {
	var buf [6]byte
	_, _ = rand.Read(buf[:])
	return prefix + "_" + hex.EncodeToString(buf[:])
}

// Dialect returns the backend of the set's databases.
func (s *Set) Dialect() eventlog.Backend { return s.dialect }

// Name returns the set's name: the common prefix of its PostgreSQL
// schemas.
func (s *Set) Name() string { return s.name }

// Dir returns a SQLite set's directory ("" on PostgreSQL).
func (s *Set) Dir() string { return s.dir }

// Ping checks that the PostgreSQL server is reachable with the base URL;
// on SQLite it returns nil (New made the directory).
func (s *Set) Ping(ctx context.Context) error {
	if s.dialect != eventlog.Postgres {
		return nil
	}
	if err := s.admin.PingContext(ctx); err != nil {
		return fmt.Errorf("connect to %s: %w", redact.URL(s.base), redact.Error(err, s.base))
	}
	return nil
}

// Create makes a new empty database in the set. Open it with DB.URL.
func (s *Set) Create(ctx context.Context) (*DB, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errors.New("scratchdb: Create on a closed set")
	}
	s.n++
	n := s.n
	s.mu.Unlock()

	db := &DB{set: s}
	if s.dialect == eventlog.SQLite {
		db.Name = filepath.Join(s.dir, "scratch-"+strconv.Itoa(n)+".db")
		db.URL = "sqlite:" + db.Name
		s.add(db)
		// An empty file is an empty SQLite database.
		f, err := os.OpenFile(db.Name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("create scratch database: %w", err)
		}
		if err := f.Close(); err != nil {
			return nil, fmt.Errorf("create scratch database: %w", err)
		}
		return db, nil
	}
	db.Name = s.name + "_" + strconv.Itoa(n)
	u, err := SchemaURL(s.base, db.Name)
	if err != nil {
		return nil, err
	}
	db.URL = u
	// Added before it exists: a CREATE whose answer is lost (a cancelled
	// context, a dropped connection) may still have committed, and Close
	// drops it if so.
	s.add(db)
	if _, err := s.admin.ExecContext(ctx, `CREATE SCHEMA `+pq.QuoteIdentifier(db.Name)); err != nil {
		return nil, fmt.Errorf("create scratch schema %s: %w", db.Name, redact.Error(err, s.base))
	}
	return db, nil
}

func (s *Set) add(db *DB) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dbs = append(s.dbs, db)
}

// Drop removes the database now rather than at Close; close every pool on
// it first. Dropping it again does nothing.
func (db *DB) Drop() error {
	s := db.set
	s.mu.Lock()
	if db.dropped {
		s.mu.Unlock()
		return nil
	}
	db.dropped = true
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), dropTimeout)
	defer cancel()
	return s.drop(ctx, db)
}

func (s *Set) drop(ctx context.Context, db *DB) error {
	if s.dialect == eventlog.SQLite {
		var errs []error
		for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
			if err := os.Remove(db.Name + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	var err error
	for range 20 {
		// IF EXISTS: a CREATE that failed may have left nothing to drop.
		// The schemas named after it, <name>__…, are its online
		// rebuilds' shadow copies, which a test stopped halfway leaves.
		if _, err = s.admin.ExecContext(ctx, `DO $$
DECLARE s text;
BEGIN
  FOR s IN SELECT nspname FROM pg_namespace WHERE nspname = `+pq.QuoteLiteral(db.Name)+` OR starts_with(nspname, `+pq.QuoteLiteral(db.Name+"__")+`) LOOP
    EXECUTE format('DROP SCHEMA IF EXISTS %I CASCADE', s);
  END LOOP;
END $$`); err == nil {
			return nil
		}
		if ctx.Err() != nil {
			break
		}
		// Connections of the database's users may still be closing.
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("drop scratch schema %s: %w", db.Name, redact.Error(err, s.base))
}

// Close drops every database of the set not dropped yet and removes a
// SQLite set's directory; close every pool on them first. It runs with a
// context of its own, so that it also cleans up after an interrupt.
// Closing a set again does nothing.
func (s *Set) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var left []*DB
	for _, db := range s.dbs {
		if !db.dropped {
			db.dropped = true
			left = append(left, db)
		}
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), dropTimeout)
	defer cancel()
	var errs []error
	if s.dialect == eventlog.SQLite {
		if err := os.RemoveAll(s.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove scratch directory: %w", err))
		}
		return errors.Join(errs...)
	}
	for _, db := range left {
		errs = append(errs, s.drop(ctx, db))
	}
	errs = append(errs, s.admin.Close())
	return errors.Join(errs...)
}

// SchemaURL returns the PostgreSQL URL baseURL with search_path pinned to
// schema, whatever search_path baseURL gave.
func SchemaURL(baseURL, schema string) (string, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return "", fmt.Errorf("database URL %s is malformed: %s", redact.URL(baseURL), redact.ParseReason(err))
	}
	q := u.Query()
	q.Set("search_path", searchPath(schema))
	u.RawQuery = q.Encode()
	return u.String(), nil
}

var plainIdent = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// searchPath renders schema as a search_path element: as is when the
// server reads it unchanged (it folds unquoted names to lower case),
// quoted otherwise.
func searchPath(schema string) string {
	if plainIdent.MatchString(schema) {
		return schema
	}
	return pq.QuoteIdentifier(schema)
}
