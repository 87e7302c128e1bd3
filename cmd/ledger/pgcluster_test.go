package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// pgBin holds initdb and pg_ctl of the PostgreSQL the tests may run
// privately; LEDGER_TEST_PG_BIN overrides it.
func pgBin() string {
	if d := os.Getenv("LEDGER_TEST_PG_BIN"); d != "" {
		return d
	}
	// Debian installs each major version under its own directory: take the
	// newest one that has initdb.
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	best, bestVersion := "/usr/lib/postgresql/15/bin", 0
	for _, d := range dirs {
		v, err := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(d))))
		if err == nil && v > bestVersion {
			best, bestVersion = filepath.Dir(d), v
		}
	}
	return best
}

// pgCluster is a PostgreSQL server of the test's own, so that the test can
// restart it without disturbing anyone else's server.
type pgCluster struct {
	t    testing.TB
	dir  string
	port int
	as   []string // runs a command as the cluster's owner
}

// startPGCluster runs initdb and starts a private cluster on a free port
// (trust authentication, 127.0.0.1 only). initdb refuses to run as root, so
// as root the cluster belongs to the postgres user. Without the binaries
// the test is skipped, except under CI, which has them.
func startPGCluster(t testing.TB) *pgCluster {
	t.Helper()
	if _, err := os.Stat(filepath.Join(pgBin(), "initdb")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL binaries not found in %s (set LEDGER_TEST_PG_BIN): %v", pgBin(), err)
		}
		t.Skipf("PostgreSQL binaries not found in %s (set LEDGER_TEST_PG_BIN): a private cluster is needed to restart the database", pgBin())
	}
	dir, err := os.MkdirTemp("", "ledger-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	c := &pgCluster{t: t, dir: dir, port: freePort(t)}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Skipf("running as root without a postgres user to own a private cluster: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		c.as = []string{"runuser", "-u", "postgres", "--"}
	}
	c.run("initdb", "-D", c.data(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
	c.run("pg_ctl", "-D", c.data(), "-l", filepath.Join(dir, "log"), "-w", "-t", "60",
		"-o", fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=100", c.port, dir), "start")
	t.Cleanup(func() { c.runQuiet("pg_ctl", "-D", c.data(), "-m", "immediate", "-w", "stop") })
	return c
}

func (c *pgCluster) data() string { return filepath.Join(c.dir, "data") }

// URL is the connection string of a database on the cluster.
func (c *pgCluster) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// Restart stops the server in mode ("fast": connections are closed and
// the server shuts down cleanly; "immediate": like a crash, recovered
// from the WAL at start) and starts it again on the same port.
func (c *pgCluster) Restart(mode string) {
	c.t.Helper()
	// -l again: without it the new server would write to pg_ctl's output,
	// which the test would then wait on for ever.
	c.run("pg_ctl", "-D", c.data(), "-l", filepath.Join(c.dir, "log"), "-m", mode, "-w", "-t", "60", "restart")
}

func (c *pgCluster) run(name string, args ...string) {
	c.t.Helper()
	if out, err := c.command(name, args...).CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.dir, "log"))
		c.t.Fatalf("%s %s: %v\n%s\n%s", name, strings.Join(args, " "), err, out, log)
	}
}

func (c *pgCluster) runQuiet(name string, args ...string) { _ = c.command(name, args...).Run() }

func (c *pgCluster) command(name string, args ...string) *exec.Cmd {
	argv := append(append([]string{}, c.as...), append([]string{filepath.Join(pgBin(), name)}, args...)...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.WaitDelay = 5 * time.Second // a server started here never holds the test's pipes
	return cmd
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
