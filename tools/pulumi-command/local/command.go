// Package local implements command:local:Command with the inputs and outputs of the pulumi-command
// SDK (create/update/delete run through an interpreter, /bin/sh -c by default; stdout and stderr
// are outputs; a change to triggers replaces the resource).
package local

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"

	"github.com/pulumi/pulumi-go-provider/infer"
)

// Command runs shell commands on the machine that runs Pulumi.
type Command struct{}

// CommandArgs are the inputs the pulumi-command SDK sends.
type CommandArgs struct {
	Create                 *string           `pulumi:"create,optional"`
	Update                 *string           `pulumi:"update,optional"`
	Delete                 *string           `pulumi:"delete,optional"`
	Dir                    *string           `pulumi:"dir,optional"`
	Environment            map[string]string `pulumi:"environment,optional"`
	Interpreter            []string          `pulumi:"interpreter,optional"`
	Stdin                  *string           `pulumi:"stdin,optional"`
	Triggers               []any             `pulumi:"triggers,optional" provider:"replaceOnChanges"`
	AddPreviousOutputInEnv *bool             `pulumi:"addPreviousOutputInEnv,optional"`
	AssetPaths             []string          `pulumi:"assetPaths,optional"`
	ArchivePaths           []string          `pulumi:"archivePaths,optional"`
	Logging                *string           `pulumi:"logging,optional"`
}

// CommandState is what is stored: the inputs plus the last command's output.
type CommandState struct {
	CommandArgs
	Stdout string `pulumi:"stdout"`
	Stderr string `pulumi:"stderr"`
}

func run(ctx context.Context, args CommandArgs, command string, previous *CommandState) (string, string, error) {
	interpreter := args.Interpreter
	if len(interpreter) == 0 {
		interpreter = []string{"/bin/sh", "-c"}
	}
	cmd := exec.CommandContext(ctx, interpreter[0], append(append([]string{}, interpreter[1:]...), command)...)
	cmd.Env = os.Environ()
	keys := make([]string, 0, len(args.Environment))
	for k := range args.Environment {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cmd.Env = append(cmd.Env, k+"="+args.Environment[k])
	}
	if previous != nil && (args.AddPreviousOutputInEnv == nil || *args.AddPreviousOutputInEnv) {
		cmd.Env = append(cmd.Env, "PULUMI_COMMAND_STDOUT="+previous.Stdout, "PULUMI_COMMAND_STDERR="+previous.Stderr)
	}
	if args.Dir != nil {
		cmd.Dir = *args.Dir
	}
	if args.Stdin != nil {
		cmd.Stdin = strings.NewReader(*args.Stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out, errOut := strings.TrimSuffix(stdout.String(), "\n"), strings.TrimSuffix(stderr.String(), "\n")
	if err != nil {
		return out, errOut, fmt.Errorf("command %q failed: %w: %s", command, err, errOut)
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

// Delete runs delete.
func (Command) Delete(ctx context.Context, req infer.DeleteRequest[CommandState]) (infer.DeleteResponse, error) {
	if req.State.Delete == nil {
		return infer.DeleteResponse{}, nil
	}
	_, _, err := run(ctx, req.State.CommandArgs, *req.State.Delete, &req.State)
	return infer.DeleteResponse{}, err
}
