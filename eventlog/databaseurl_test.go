package eventlog_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
)

func TestDatabaseURL(t *testing.T) {
	env := func(kv map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
	}
	for _, tc := range []struct {
		name     string
		explicit string
		env      map[string]string
		want     string
	}{
		{"explicit wins", "sqlite:a.db", map[string]string{"CANONLOG_DATABASE_URL": "sqlite:b.db", "DATABASE_URL": "sqlite:c.db"}, "sqlite:a.db"},
		{"canonlog variable", "", map[string]string{"CANONLOG_DATABASE_URL": "sqlite:b.db", "DATABASE_URL": "sqlite:c.db"}, "sqlite:b.db"},
		{"fallback variable", "", map[string]string{"DATABASE_URL": "sqlite:c.db"}, "sqlite:c.db"},
		{"empty canonlog variable falls through", "", map[string]string{"CANONLOG_DATABASE_URL": " ", "DATABASE_URL": "sqlite:c.db"}, "sqlite:c.db"},
		{"white space dropped", "", map[string]string{"CANONLOG_DATABASE_URL": " sqlite:b.db\n"}, "sqlite:b.db"},
		{"default", "", nil, eventlog.DefaultDatabaseURL},
		{"the caller's default", "", nil, "sqlite:service.db"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			def := ""
			if tc.name == "the caller's default" {
				def = tc.want
			}
			require.Equal(t, tc.want, eventlog.DatabaseURL(tc.explicit, env(tc.env), def))
		})
	}
}

func TestSQLiteFile(t *testing.T) {
	for url, want := range map[string]string{
		"sqlite:canonlog.db":         "canonlog.db",
		"sqlite:///abs/c.db?_x=1":    "/abs/c.db",
		"sqlite://rel/c.db":          "rel/c.db",
		"sqlite::memory:":            "",
		"sqlite:":                    "",
		"postgres://h/db":            "",
		"file:/tmp/c.db?mode=memory": "",
	} {
		path, ok := eventlog.SQLiteFile(url)
		require.Equal(t, want, path, url)
		require.Equal(t, want != "", ok, url)
	}
}
