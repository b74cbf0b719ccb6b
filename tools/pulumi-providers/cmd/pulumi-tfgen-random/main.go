// Command pulumi-tfgen-random generates the provider's schema: pulumi-tfgen-random schema --out DIR
// writes DIR/schema.json and DIR/bridge-metadata.json for pulumi-resource-random to embed.
package main

import (
	pftfgen "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfgen"

	"github.com/coderig/tools/pulumi-providers/random"
)

// version is set with -ldflags "-X main.version=X.Y.Z".
var version = "0.0.0"

func main() { pftfgen.Main("random", random.Provider(version, []byte("{}"))) }
