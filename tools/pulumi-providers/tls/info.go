// Package tls maps the Terraform tls provider to Pulumi tokens matching the pulumi-tls SDK
// (tls:index/privateKey:PrivateKey, ...).
package tls

import (
	"github.com/hashicorp/terraform-provider-tls/shim"
	pftfbridge "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge/tokens"
)

// Provider returns the bridge's description of the provider; metadata is bridge-metadata.json.
func Provider(version string, metadata []byte) tfbridge.ProviderInfo {
	info := tfbridge.ProviderInfo{
		P:            pftfbridge.ShimProvider(shim.NewProvider()),
		Name:         "tls",
		Version:      version,
		DisplayName:  "TLS",
		Publisher:    "Pulumi",
		GitHubOrg:    "hashicorp",
		Repository:   "https://github.com/pulumi/pulumi-tls",
		MetadataInfo: tfbridge.NewProviderMetadata(metadata),
	}
	info.MustComputeTokens(tokens.SingleModule("tls_", "index", tokens.MakeStandard("tls")))
	return info
}
