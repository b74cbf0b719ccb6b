// Package shim exposes the Terraform tls provider (a terraform-plugin-framework provider).
package shim

import (
	"github.com/hashicorp/terraform-plugin-framework/provider"
	tf "github.com/hashicorp/terraform-provider-tls/internal/provider"
)

// NewProvider returns the Terraform provider.
func NewProvider() provider.Provider { return tf.New() }
