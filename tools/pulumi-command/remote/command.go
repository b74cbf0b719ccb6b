package remote

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"sync"

	p "github.com/pulumi/pulumi-go-provider"
	"github.com/pulumi/pulumi-go-provider/infer"
)

// Command runs shell commands on a remote host over SSH.
type Command struct{}

// CommandArgs are the inputs the pulumi-command SDK sends (command:remote:Command).
type CommandArgs struct {
	Connection             *Connection       `pulumi:"connection" provider:"secret"`
	Environment            map[string]string `pulumi:"environment,optional"`
	Triggers               []any             `pulumi:"triggers,optional" provider:"replaceOnChanges"`
	Create                 *string           `pulumi:"create,optional"`
	Delete                 *string           `pulumi:"delete,optional"`
	Update                 *string           `pulumi:"update,optional"`
	Stdin                  *string           `pulumi:"stdin,optional"`
	Logging                *string           `pulumi:"logging,optional"`
	AddPreviousOutputInEnv *bool             `pulumi:"addPreviousOutputInEnv,optional"`
}

// CommandState is what is stored: the inputs plus the last command's output.
type CommandState struct {
	CommandArgs
	Stdout string `pulumi:"stdout"`
	Stderr string `pulumi:"stderr"`
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'" }

// logWriter collects everything written and, when log is set, logs each complete line.
type logWriter struct {
	mu   *sync.Mutex
	buf  bytes.Buffer
	line bytes.Buffer
	log  func(string)
}

func (w *logWriter) Write(b []byte) (int, error) {
	w.buf.Write(b)
	if w.log == nil {
		return len(b), nil
	}
	w.line.Write(b)
	for {
		i := bytes.IndexByte(w.line.Bytes(), '\n')
		if i < 0 {
			break
		}
		text := string(w.line.Next(i + 1))
		w.mu.Lock()
		w.log(strings.TrimSuffix(text, "\n"))
		w.mu.Unlock()
	}
	return len(b), nil
}

func (w *logWriter) flush() {
	if w.log != nil && w.line.Len() > 0 {
		w.log(w.line.String())
		w.line.Reset()
	}
}

func run(ctx context.Context, args CommandArgs, command string, previous *CommandState) (string, string, error) {
	if args.Connection == nil {
		return "", "", fmt.Errorf("connection is required")
	}
	logging := "stdoutAndStderr"
	if args.Logging != nil {
		logging = *args.Logging
	}
	switch logging {
	case "stdout", "stderr", "stdoutAndStderr", "none":
	default:
		return "", "", fmt.Errorf("logging %q: allowed are stdout, stderr, stdoutAndStderr, none", logging)
	}
	client, err := args.Connection.dial(ctx)
	if err != nil {
		return "", "", err
	}
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		return "", "", fmt.Errorf("ssh session to %s: %w", args.Connection.Host, err)
	}
	defer session.Close()

	env := map[string]string{}
	for k, v := range args.Environment {
		env[k] = v
	}
	if previous != nil && (args.AddPreviousOutputInEnv == nil || *args.AddPreviousOutputInEnv) {
		env["PULUMI_COMMAND_STDOUT"], env["PULUMI_COMMAND_STDERR"] = previous.Stdout, previous.Stderr
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	// Servers accept only the variables their AcceptEnv lists; the others are exported in front of
	// the command (the remote login shell runs it).
	var prefix strings.Builder
	for _, k := range keys {
		if session.Setenv(k, env[k]) != nil {
			fmt.Fprintf(&prefix, "export %s=%s; ", k, shellQuote(env[k]))
		}
	}
	if args.Stdin != nil {
		session.Stdin = strings.NewReader(*args.Stdin)
	} else {
		session.Stdin = strings.NewReader("")
	}
	logger := p.GetLogger(ctx)
	var mu sync.Mutex
	stdout := &logWriter{mu: &mu}
	stderr := &logWriter{mu: &mu}
	if logging == "stdout" || logging == "stdoutAndStderr" {
		stdout.log = logger.Info
	}
	if logging == "stderr" || logging == "stdoutAndStderr" {
		stderr.log = logger.Info
	}
	session.Stdout, session.Stderr = stdout, stderr
	err = session.Run(prefix.String() + command)
	stdout.flush()
	stderr.flush()
	out := strings.TrimSuffix(stdout.buf.String(), "\n")
	errOut := strings.TrimSuffix(stderr.buf.String(), "\n")
	if err != nil {
		// The command and its output may hold secrets: they are not repeated in the error unless
		// logging allows stderr.
		detail := ""
		if stderr.log != nil {
			detail = ": " + errOut
		}
		return out, errOut, fmt.Errorf("remote command on %s failed: %w%s", args.Connection.Host, err, detail)
	}
	return out, errOut, nil
}

// Create runs create.
func (Command) Create(ctx context.Context, req infer.CreateRequest[CommandArgs]) (infer.CreateResponse[CommandState], error) {
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		return infer.CreateResponse[CommandState]{}, err
	}
	resp := infer.CreateResponse[CommandState]{
		ID:     req.Name + "-" + hex.EncodeToString(suffix),
		Output: CommandState{CommandArgs: req.Inputs},
	}
	if req.DryRun || req.Inputs.Create == nil {
		return resp, nil
	}
	var err error
	resp.Output.Stdout, resp.Output.Stderr, err = run(ctx, req.Inputs, *req.Inputs.Create, nil)
	return resp, err
}

// Update runs update, or create again when there is no update command.
func (Command) Update(ctx context.Context, req infer.UpdateRequest[CommandArgs, CommandState]) (infer.UpdateResponse[CommandState], error) {
	resp := infer.UpdateResponse[CommandState]{Output: CommandState{CommandArgs: req.Inputs}}
	command := req.Inputs.Update
	if command == nil {
		command = req.Inputs.Create
	}
	if req.DryRun || command == nil {
		resp.Output.Stdout, resp.Output.Stderr = req.State.Stdout, req.State.Stderr
		return resp, nil
	}
	var err error
	resp.Output.Stdout, resp.Output.Stderr, err = run(ctx, req.Inputs, *command, &req.State)
	return resp, err
}

// Delete runs delete with the connection stored in the state.
func (Command) Delete(ctx context.Context, req infer.DeleteRequest[CommandState]) (infer.DeleteResponse, error) {
	if req.State.Delete == nil {
		return infer.DeleteResponse{}, nil
	}
	_, _, err := run(ctx, req.State.CommandArgs, *req.State.Delete, &req.State)
	return infer.DeleteResponse{}, err
}
