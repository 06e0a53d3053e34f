package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestTokensFile(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 1, 4, 0, 0, 0, time.UTC)

	t.Run("issued_token_is_found_by_its_hash", func(t *testing.T) {
		t.Parallel()
		token, e, err := newToken(roleAgent, "web-5", now)
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(token, "fleetd_"+e.ID+"_"))
		require.NotContains(t, e.line(), strings.TrimPrefix(token, "fleetd_"+e.ID+"_"), "the file never holds the secret")
		parsed, err := parseTokens([]byte(tokensHeader + "\n\n" + e.line() + "\n"))
		require.NoError(t, err)
		require.Equal(t, []tokenEntry{e}, parsed)
		set := tokenSet{e.ID: e}
		got, ok := set.lookup(token)
		require.True(t, ok)
		require.Equal(t, "web-5", got.Name)
		for _, bad := range []string{"", token[:len(token)-1], token + "A", token[:len(token)-1] + "B", strings.ToUpper(token), "fleetd_" + e.ID + "_"} {
			_, ok := set.lookup(bad)
			require.False(t, ok, "%q", bad)
		}
		other, _, err := newToken(roleAgent, "web-5", now)
		require.NoError(t, err)
		_, ok = set.lookup(other)
		require.False(t, ok, "another token of the same host")
	})

	t.Run("bad_files_are_refused_whole", func(t *testing.T) {
		t.Parallel()
		_, e, err := newToken(roleOperator, "gate", now)
		require.NoError(t, err)
		good := e.line()
		fields := strings.Fields(good)
		with := func(i int, v string) string {
			f := append([]string(nil), fields...)
			f[i] = v
			return strings.Join(f, " ")
		}
		for name, tc := range map[string]struct{ line, want string }{
			"few_fields":   {"abc agent web-5", "3 fields, want 5"},
			"bad_id":       {with(0, "xyz"), `token id "xyz"`},
			"bad_role":     {with(1, "admin"), `role "admin"`},
			"slash_name":   {with(2, "web/5"), `operator name "web/5"`},
			"bad_time":     {with(3, "yesterday"), "RFC 3339"},
			"bad_hash":     {with(4, "md5:00"), "want sha256:"},
			"short_hash":   {with(4, "sha256:00"), "want sha256:"},
			"duplicate_id": {good + "\n" + good, "is also on line 1"},
		} {
			_, err := parseTokens([]byte(good + "\n" + tc.line + "\n"))
			if name == "duplicate_id" {
				_, err = parseTokens([]byte(tc.line))
			}
			require.ErrorContains(t, err, tc.want, name)
		}
	})

	t.Run("server_rereads_and_fails_closed", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "tokens")
		token, e, err := newToken(roleAgent, "web-5", now)
		require.NoError(t, err)
		require.NoError(t, writeTokensFile(path, []tokenEntry{e}))
		clock := now
		f, err := openTokensFile(path, func() time.Time { return clock })
		require.NoError(t, err)
		lookup := func() (bool, error) {
			_, ok, changeErr := f.lookup(token)
			return ok, changeErr
		}
		ok, _ := lookup()
		require.True(t, ok)

		require.NoError(t, os.WriteFile(path, []byte("broken\n"), 0o600))
		ok, _ = lookup()
		require.True(t, ok, "the file is looked at again only after fileRecheck")
		clock = clock.Add(fileRecheck)
		ok, changeErr := lookup()
		require.False(t, ok, "a broken file accepts no token")
		require.ErrorContains(t, changeErr, "line 1")
		clock = clock.Add(fileRecheck)
		ok, changeErr = lookup()
		require.False(t, ok)
		require.NoError(t, changeErr, "the same breakage is reported once")

		require.NoError(t, writeTokensFile(path, []tokenEntry{e}))
		clock = clock.Add(fileRecheck)
		ok, _ = lookup()
		require.True(t, ok, "fixed")

		require.NoError(t, os.Remove(path))
		clock = clock.Add(fileRecheck)
		ok, changeErr = lookup()
		require.False(t, ok, "a removed file accepts no token")
		require.ErrorContains(t, changeErr, "no such file")
	})

	t.Run("openTokensFile_refuses_missing_or_broken", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		_, err := openTokensFile(filepath.Join(dir, "none"), time.Now)
		require.ErrorContains(t, err, "no such file")
		bad := filepath.Join(dir, "bad")
		require.NoError(t, os.WriteFile(bad, []byte("# header\nx y\n"), 0o600))
		_, err = openTokensFile(bad, time.Now)
		require.ErrorContains(t, err, "line 2")
	})
}

func TestTokenCommand(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "tokens")
	token := func(args ...string) (string, string, int) {
		return runFleetd(ctx, nil, append([]string{"token"}, args...)...)
	}

	out, errOut, code := token("issue", "--tokens-file", path, "--agent", "web-5")
	require.Equal(t, exitOK, code, errOut)
	web5 := strings.TrimSpace(out)
	require.NotEmpty(t, tokenID(web5))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "readable by its owner only")
	_, _, code = token("issue", "--tokens-file", path, "--agent", "web-5")
	require.Equal(t, exitOK, code)
	_, _, code = token("issue", "--tokens-file", path, "--operator", "gate")
	require.Equal(t, exitOK, code)

	out, _, code = token("list", "--tokens-file", path)
	require.Equal(t, exitOK, code)
	require.Equal(t, 4, strings.Count(out, "\n"), out)
	require.Contains(t, out, tokenID(web5)+"  agent     web-5")
	require.NotContains(t, out, web5)

	refused := map[string]struct {
		args []string
		want string
	}{
		"no_file":       {[]string{"issue", "--agent", "web-5"}, "--tokens-file (or FLEETD_TOKENS_FILE) is required"},
		"no_role":       {[]string{"issue", "--tokens-file", path}, "give one of --agent HOST"},
		"two_roles":     {[]string{"issue", "--tokens-file", path, "--agent", "a", "--operator", "b"}, "give one of --agent HOST"},
		"bad_host":      {[]string{"issue", "--tokens-file", path, "--agent", "web 5"}, "host id is letters"},
		"unknown":       {[]string{"revoke", "--tokens-file", path, "web-5", "web-6"}, `"web-6" is no token id or name`},
		"revoke_no_arg": {[]string{"revoke", "--tokens-file", path}, "requires at least 1 arg"},
	}
	before, err := os.ReadFile(path)
	require.NoError(t, err)
	for name, tc := range refused {
		_, errOut, code := token(tc.args...)
		require.NotEqual(t, exitOK, code, name)
		require.Contains(t, errOut, tc.want, name)
	}
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, string(before), string(after), "a refused command changes nothing")

	_, errOut, code = token("revoke", "--tokens-file", path, tokenID(web5))
	require.Equal(t, exitOK, code, errOut)
	require.Contains(t, errOut, "revoked 1 token(s)")
	_, errOut, code = token("revoke", "--tokens-file", path, "web-5", "gate")
	require.Equal(t, exitOK, code, errOut)
	require.Contains(t, errOut, "revoked 2 token(s)")
	out, _, _ = token("list", "--tokens-file", path)
	require.Equal(t, "ID  ROLE  NAME  ISSUED\n", out)

	// The environment names the file as the flag does.
	out, errOut, code = runFleetd(ctx, map[string]string{EnvTokensFile: path}, "token", "list")
	require.Equal(t, exitOK, code, errOut)
	require.Equal(t, "ID  ROLE  NAME  ISSUED\n", out)
}
