// Package shim exposes the Terraform random provider (a terraform-plugin-framework provider).
package shim

import (
	"github.com/hashicorp/terraform-plugin-framework/provider"
	tf "github.com/terraform-providers/terraform-provider-random/internal/provider"
)

// NewProvider returns the Terraform provider.
func NewProvider() provider.Provider { return tf.New() }
