// Do an operation once across all nodes, with baton and redigo (github.com/gomodule/redigo).
//
// Every node runs this with the same key and its own node id. One of them runs the command while
// the others wait in baton's queue; when it succeeds they are all told DONE (with its result) and
// skip the work; when it fails the next node in line gets the lock and tries.
//
//	go build -o once examples/once.go   (in a module that requires github.com/gomodule/redigo)
//	./once --port 6390 --key build:42 --node "$(hostname)" -- make image
//
// It prints what it did, one line per step, the last line being the outcome:
// `<node>: SUCCESS result=...` (exit 0), `<node>: DONE finisher=... result=...` (exit 0, work
// skipped), `<node>: FAILURE reason=...` (exit 1), `<node>: LOST ...` (exit 3: the lock was lost
// while working). Connection and usage errors go to stderr with exit 2.
//
// The points that matter with redigo:
//   - One connection from LOCK.WAIT to LOCK.UNLOCK (redis.Dial, not a redis.Pool shared with other
//     work): baton releases the lock as FAILURE when the connection that took it closes.
//   - redigo has no read timeout unless DialReadTimeout sets one. With one, keep --wait-ms below
//     it: each LOCK.WAIT blocks for --wait-ms at most, and a timed-out WAIT is sent again by the
//     same owner, which keeps its place in line.
//   - While the command runs, LOCK.EXTEND renews the lease every lease/3 (this goroutine only waits
//     for the command, so nothing else uses the connection).
//   - redigo speaks RESP2; baton's replies are the same arrays in both protocols.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gomodule/redigo/redis"
)

type options struct {
	host, password, key, node string
	port                      int
	leaseMs, waitMs, keepMs   int64
	command                   []string
}

func parseOptions() options {
	var o options
	flag.StringVar(&o.host, "host", "127.0.0.1", "baton server host")
	flag.IntVar(&o.port, "port", 6390, "baton server port")
	flag.StringVar(&o.password, "password", "", "password if the server runs with --requirepass (or BATON_PASSWORD)")
	flag.StringVar(&o.key, "key", "", "the lock key: one key per operation")
	flag.StringVar(&o.node, "node", "", "this node's id, the lock owner; unique per node")
	flag.Int64Var(&o.leaseMs, "lease-ms", 30000,
		"lease of the lock (and of our place in line); renewed every lease/3 while working")
	flag.Int64Var(&o.waitMs, "wait-ms", 2000,
		"how long one LOCK.WAIT blocks before we ask again (our place is kept); 0 = until answered")
	flag.Int64Var(&o.keepMs, "keep-ms", 600000,
		"how long the server remembers the success, answering DONE to late nodes")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(),
			"usage: once [--host H] [--port P] [--password PW] --key KEY --node NODE "+
				"[--lease-ms MS] [--wait-ms MS] [--keep-ms MS] -- COMMAND [ARGS...]")
		flag.PrintDefaults()
	}
	flag.Parse()
	usage := func(message string) {
		fmt.Fprintln(os.Stderr, message)
		flag.Usage()
		os.Exit(2)
	}
	if o.key == "" || o.node == "" {
		usage("--key and --node are required")
	}
	if o.leaseMs < 1 || o.waitMs < 0 || o.keepMs < 0 {
		usage("--lease-ms must be positive, --wait-ms and --keep-ms not negative")
	}
	if o.password == "" {
		// Not the flag's default, which -help would print.
		o.password = os.Getenv("BATON_PASSWORD")
	}
	o.command = flag.Args()
	if len(o.command) == 0 {
		usage("the work is missing: add -- and a command")
	}
	return o
}

func (o options) say(format string, args ...interface{}) {
	fmt.Printf("%s: %s\n", o.node, fmt.Sprintf(format, args...))
}

// text renders a bulk string, a status or an integer; nil (a SUCCESS without RESULT) is "".
func text(value interface{}) string {
	switch v := value.(type) {
	case []byte:
		return string(v)
	case string:
		return v
	case int64:
		return strconv.FormatInt(v, 10)
	}
	return ""
}

// turn is what LOCK.WAIT finally answered: acquired with a token, or done by a finisher.
type turn struct {
	acquired         bool
	token            int64
	finisher, result string
}

// waitForTurn sends LOCK.WAIT until it answers ACQUIRED or DONE. A WAIT that times out (nil)
// leaves this owner in line, so the same WAIT is simply sent again.
func waitForTurn(conn redis.Conn, o options) (turn, error) {
	for {
		reply, err := conn.Do("LOCK.WAIT", o.key, o.node, o.waitMs, "PX", o.leaseMs)
		if err != nil {
			return turn{}, fmt.Errorf("LOCK.WAIT: %w", err)
		}
		if reply == nil {
			o.say("STILL WAITING")
			continue
		}
		items, err := redis.Values(reply, nil)
		if err != nil || len(items) < 2 {
			return turn{}, fmt.Errorf("unexpected LOCK.WAIT reply %v", reply)
		}
		switch text(items[0]) {
		case "ACQUIRED":
			token, err := redis.Int64(items[1], nil)
			if err != nil {
				return turn{}, fmt.Errorf("unexpected LOCK.WAIT token %v", items[1])
			}
			return turn{acquired: true, token: token}, nil
		case "DONE":
			var result string
			if len(items) > 2 {
				result = text(items[2])
			}
			return turn{finisher: text(items[1]), result: result}, nil
		}
		return turn{}, fmt.Errorf("unexpected LOCK.WAIT reply %v", reply)
	}
}

// work is how the command ended: its output when it succeeded, or why it failed or was stopped.
type work struct {
	succeeded    bool
	output, lost string
	reason       string
}

// runWork runs the command, renewing the lease every lease/3 until it exits. A refused EXTEND
// stops the command: the lock is lost, and the next node may already be doing the work.
func runWork(conn redis.Conn, o options, token int64) work {
	cmd := exec.Command(o.command[0], o.command[1:]...)
	var output bytes.Buffer
	cmd.Stdout = &output
	cmd.Stderr = os.Stderr
	cmd.Env = append(os.Environ(), "BATON_KEY="+o.key, "BATON_NODE="+o.node,
		"BATON_TOKEN="+strconv.FormatInt(token, 10))
	if err := cmd.Start(); err != nil {
		return work{reason: fmt.Sprintf("cannot start %s: %v", o.command[0], err)}
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	every := time.Duration(o.leaseMs/3) * time.Millisecond
	if every <= 0 {
		every = time.Millisecond
	}
	renew := time.NewTicker(every)
	defer renew.Stop()
	for {
		select {
		case err := <-exited:
			return ended(err, output.String())
		case <-renew.C:
			if _, err := redis.Int64(conn.Do("LOCK.EXTEND", o.key, o.node, token, o.leaseMs)); err != nil {
				_ = cmd.Process.Kill()
				<-exited
				return work{lost: "LOCK.EXTEND refused, work stopped: " + err.Error()}
			}
			o.say("EXTENDED token=%d lease_ms=%d", token, o.leaseMs)
		}
	}
}

func ended(err error, output string) work {
	var exit *exec.ExitError
	switch {
	case err == nil:
		return work{succeeded: true, output: strings.TrimRight(output, " \t\r\n")}
	case errors.As(err, &exit):
		if status, ok := exit.Sys().(syscall.WaitStatus); ok && status.Signaled() {
			return work{reason: fmt.Sprintf("terminated (signal %d)", int(status.Signal()))}
		}
		return work{reason: fmt.Sprintf("exit status %d", exit.ExitCode())}
	}
	return work{reason: fmt.Sprintf("waiting for the work: %v", err)}
}

func once(o options) (int, error) {
	address := net.JoinHostPort(o.host, strconv.Itoa(o.port))
	conn, err := redis.Dial("tcp", address, redis.DialPassword(o.password))
	if err != nil {
		return 2, fmt.Errorf("cannot connect to %s: %w", address, err)
	}
	defer conn.Close()

	o.say("WAITING key=%s", o.key)
	t, err := waitForTurn(conn, o)
	if err != nil {
		return 2, err
	}
	if !t.acquired {
		o.say("DONE finisher=%s result=%s", t.finisher, t.result)
		return 0, nil
	}
	o.say("ACQUIRED token=%d", t.token)

	w := runWork(conn, o, t.token)
	if w.lost != "" {
		o.say("LOST %s", w.lost)
		return 3, nil
	}
	line, status := "FAILURE reason="+w.reason, 1
	if w.succeeded {
		_, err = conn.Do("LOCK.UNLOCK", o.key, o.node, t.token, "SUCCESS", "RESULT", w.output, "KEEP", o.keepMs)
		line, status = "SUCCESS result="+w.output, 0
	} else {
		_, err = conn.Do("LOCK.UNLOCK", o.key, o.node, t.token, "FAILURE", "REASON", w.reason)
	}
	var refused redis.Error
	if errors.As(err, &refused) {
		// NOTHOLDER / NOLOCK: the lease ran out or the connection was lost; someone else may redo it.
		o.say("LOST LOCK.UNLOCK refused: %v", err)
		return 3, nil
	}
	if err != nil {
		return 2, fmt.Errorf("LOCK.UNLOCK: %w", err)
	}
	o.say("%s", line)
	return status, nil
}

func main() {
	o := parseOptions()
	status, err := once(o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: ERROR %v\n", o.node, err)
	}
	os.Exit(status)
}
