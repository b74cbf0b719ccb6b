// Package random maps the Terraform random provider to Pulumi tokens matching the pulumi-random
// SDK (random:index/randomPassword:RandomPassword, ...).
package random

import (
	"strings"

	"github.com/terraform-providers/terraform-provider-random/shim"
	pftfbridge "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge/tokens"
)

// Provider returns the bridge's description of the provider; metadata is bridge-metadata.json.
func Provider(version string, metadata []byte) tfbridge.ProviderInfo {
	info := tfbridge.ProviderInfo{
		P:            pftfbridge.ShimProvider(shim.NewProvider()),
		Name:         "random",
		Version:      version,
		DisplayName:  "random",
		Publisher:    "Pulumi",
		GitHubOrg:    "hashicorp",
		Repository:   "https://github.com/pulumi/pulumi-random",
		MetadataInfo: tfbridge.NewProviderMetadata(metadata),
	}
	standard := tokens.MakeStandard("random")
	info.MustComputeTokens(tokens.SingleModule("random_", "index", func(module, name string) (string, error) {
		if !strings.HasPrefix(name, "get") {
			name = "Random" + name // the SDK keeps the prefix: RandomPassword, RandomString, ...
		}
		return standard(module, name)
	}))
	return info
}
