// Package remote implements command:remote:Command with the inputs and outputs of the
// pulumi-command 1.2.1 SDK: create/update/delete run over SSH (golang.org/x/crypto/ssh); a pinned
// hostKey refuses any other key; stdout and stderr are outputs; a change to triggers replaces.
package remote

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// Connection is command:remote:Connection.
type Connection struct {
	Host               string           `pulumi:"host"`
	Port               *float64         `pulumi:"port,optional"`
	User               *string          `pulumi:"user,optional"`
	Password           *string          `pulumi:"password,optional" provider:"secret"`
	PrivateKey         *string          `pulumi:"privateKey,optional" provider:"secret"`
	PrivateKeyPassword *string          `pulumi:"privateKeyPassword,optional" provider:"secret"`
	AgentSocketPath    *string          `pulumi:"agentSocketPath,optional"`
	DialErrorLimit     *int             `pulumi:"dialErrorLimit,optional"`
	PerDialTimeout     *int             `pulumi:"perDialTimeout,optional"`
	HostKey            *string          `pulumi:"hostKey,optional"`
	Proxy              *ProxyConnection `pulumi:"proxy,optional"`
}

// ProxyConnection is command:remote:ProxyConnection (a bastion the connection goes through).
type ProxyConnection struct {
	Host               string   `pulumi:"host"`
	Port               *float64 `pulumi:"port,optional"`
	User               *string  `pulumi:"user,optional"`
	Password           *string  `pulumi:"password,optional" provider:"secret"`
	PrivateKey         *string  `pulumi:"privateKey,optional" provider:"secret"`
	PrivateKeyPassword *string  `pulumi:"privateKeyPassword,optional" provider:"secret"`
	AgentSocketPath    *string  `pulumi:"agentSocketPath,optional"`
	DialErrorLimit     *int     `pulumi:"dialErrorLimit,optional"`
	PerDialTimeout     *int     `pulumi:"perDialTimeout,optional"`
	HostKey            *string  `pulumi:"hostKey,optional"`
}

// endpoint is what both connection types share.
type endpoint struct {
	host                                            string
	port                                            int
	user                                            string
	password, privateKey, privateKeyPassword, agent *string
	dialErrorLimit, perDialTimeout                  int
	hostKey                                         *string
}

func orDefault[T any](v *T, d T) T {
	if v == nil {
		return d
	}
	return *v
}

func (c Connection) endpoint() endpoint {
	return endpoint{c.Host, int(orDefault(c.Port, 22)), orDefault(c.User, "root"), c.Password, c.PrivateKey,
		c.PrivateKeyPassword, c.AgentSocketPath, orDefault(c.DialErrorLimit, 10), orDefault(c.PerDialTimeout, 15), c.HostKey}
}

func (c ProxyConnection) endpoint() endpoint {
	return endpoint{c.Host, int(orDefault(c.Port, 22)), orDefault(c.User, "root"), c.Password, c.PrivateKey,
		c.PrivateKeyPassword, c.AgentSocketPath, orDefault(c.DialErrorLimit, 10), orDefault(c.PerDialTimeout, 15), c.HostKey}
}

func (e endpoint) addr() string { return net.JoinHostPort(e.host, strconv.Itoa(e.port)) }

// errHostKey marks a host key mismatch: never retried.
var errHostKey = errors.New("host key mismatch")

func (e endpoint) config() (*ssh.ClientConfig, error) {
	cfg := &ssh.ClientConfig{User: e.user, Timeout: time.Duration(e.perDialTimeout) * time.Second}
	if e.privateKey != nil {
		var signer ssh.Signer
		var err error
		if e.privateKeyPassword != nil {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(*e.privateKey), []byte(*e.privateKeyPassword))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(*e.privateKey))
		}
		if err != nil {
			return nil, fmt.Errorf("connection to %s: privateKey: %w", e.addr(), err)
		}
		cfg.Auth = append(cfg.Auth, ssh.PublicKeys(signer))
	}
	if e.password != nil {
		cfg.Auth = append(cfg.Auth, ssh.Password(*e.password))
	}
	sock := orDefault(e.agent, os.Getenv("SSH_AUTH_SOCK"))
	if sock != "" {
		if conn, err := net.Dial("unix", sock); err == nil {
			cfg.Auth = append(cfg.Auth, ssh.PublicKeysCallback(agent.NewClient(conn).Signers))
		}
	}
	if e.hostKey == nil || *e.hostKey == "" {
		cfg.HostKeyCallback = ssh.InsecureIgnoreHostKey() //nolint:gosec // no hostKey given: the SDK's documented behaviour
		return cfg, nil
	}
	want, _, _, _, err := ssh.ParseAuthorizedKey([]byte(*e.hostKey))
	if err != nil {
		return nil, fmt.Errorf("connection to %s: hostKey %q: %w", e.addr(), *e.hostKey, err)
	}
	fixed := ssh.FixedHostKey(want)
	cfg.HostKeyAlgorithms = []string{want.Type()}
	cfg.HostKeyCallback = func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		if err := fixed(hostname, remote, key); err != nil {
			return fmt.Errorf("%w: %s presented %s %s, the pinned hostKey is %s %s", errHostKey, e.addr(),
				key.Type(), ssh.FingerprintSHA256(key), want.Type(), ssh.FingerprintSHA256(want))
		}
		return nil
	}
	return cfg, nil
}

// retry dials until it succeeds, the error limit is reached (-1: unlimited) or the host key is wrong.
func (e endpoint) retry(ctx context.Context, dial func() (*ssh.Client, error)) (*ssh.Client, error) {
	var last error
	for attempt := 1; e.dialErrorLimit < 0 || attempt <= max(e.dialErrorLimit, 1); attempt++ {
		client, err := dial()
		if err == nil {
			return client, nil
		}
		last = err
		if errors.Is(err, errHostKey) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(min(attempt, 5)) * time.Second):
		}
	}
	return nil, fmt.Errorf("dialing %s failed %d times, last error: %w", e.addr(), max(e.dialErrorLimit, 1), last)
}

// dial connects to c, through its proxy when it has one.
func (c Connection) dial(ctx context.Context) (*ssh.Client, error) {
	target := c.endpoint()
	cfg, err := target.config()
	if err != nil {
		return nil, err
	}
	if c.Proxy == nil {
		return target.retry(ctx, func() (*ssh.Client, error) { return ssh.Dial("tcp", target.addr(), cfg) })
	}
	proxy := c.Proxy.endpoint()
	pcfg, err := proxy.config()
	if err != nil {
		return nil, err
	}
	bastion, err := proxy.retry(ctx, func() (*ssh.Client, error) { return ssh.Dial("tcp", proxy.addr(), pcfg) })
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	return target.retry(ctx, func() (*ssh.Client, error) {
		conn, err := bastion.Dial("tcp", target.addr())
		if err != nil {
			return nil, err
		}
		cc, chans, reqs, err := ssh.NewClientConn(conn, target.addr(), cfg)
		if err != nil {
			_ = conn.Close()
			return nil, err
		}
		return ssh.NewClient(cc, chans, reqs), nil
	})
}
