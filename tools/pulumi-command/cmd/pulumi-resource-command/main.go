// Command pulumi-resource-command is the Pulumi resource provider plugin for command.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/pulumi/pulumi-go-provider/infer"

	"github.com/coderig/tools/pulumi-command/local"
	"github.com/coderig/tools/pulumi-command/remote"
)

// version is the plugin version the CLI shows; set with -ldflags "-X main.version=X.Y.Z".
var version = "0.0.0"

func main() {
	p, err := infer.NewProviderBuilder().
		WithResources(infer.Resource(local.Command{}), infer.Resource(remote.Command{})).
		WithDisplayName("Command").
		Build()
	if err == nil {
		err = p.Run(context.Background(), "command", version)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
