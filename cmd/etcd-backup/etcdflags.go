package main

import (
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/etcd-backup/etcd-backup/internal/etcd"
)

// etcdOptions are etcdctl's connection flags, with etcdctl's names.
type etcdOptions struct {
	Endpoints          []string
	CACert, Cert, Key  string
	User, Password     string
	DialTimeout        time.Duration
	CommandTimeout     time.Duration
	InsecureSkipVerify bool
}

func (o *etcdOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringSliceVar(&o.Endpoints, "endpoints", []string{"http://127.0.0.1:2379"}, "etcd client URLs, comma separated")
	fs.StringVar(&o.CACert, "cacert", "", "verify etcd's TLS certificate with this CA bundle")
	fs.StringVar(&o.Cert, "cert", "", "TLS client certificate file")
	fs.StringVar(&o.Key, "key", "", "TLS client key file")
	fs.StringVar(&o.User, "user", "", "etcd user, as name or name:password")
	fs.StringVar(&o.Password, "password", "", "etcd password (prefer ETCD_BACKUP_PASSWORD: flags show up in ps)")
	fs.DurationVar(&o.DialTimeout, "dial-timeout", 5*time.Second, "timeout to connect to etcd")
	fs.DurationVar(&o.CommandTimeout, "command-timeout", 10*time.Second, "timeout of each short etcd request")
	fs.BoolVar(&o.InsecureSkipVerify, "insecure-skip-tls-verify", false, "do not verify etcd's TLS certificate (testing only)")
}

func (o *etcdOptions) connect() (*etcd.Client, error) {
	if len(o.Endpoints) == 0 {
		return nil, usagef("--endpoints is empty")
	}
	pw := o.Password
	if pw == "" {
		pw = os.Getenv("ETCDCTL_PASSWORD")
	}
	return etcd.Connect(etcd.Config{
		Endpoints: o.Endpoints, CACert: o.CACert, Cert: o.Cert, Key: o.Key,
		User: o.User, Password: pw, DialTimeout: o.DialTimeout, CommandTimeout: o.CommandTimeout,
		InsecureSkipVerify: o.InsecureSkipVerify,
	})
}
