package azblob_test

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/etcd-backup/etcd-backup/internal/storage"
	"github.com/etcd-backup/etcd-backup/internal/storage/azblob"
	"github.com/etcd-backup/etcd-backup/internal/storage/storagetest"
	"github.com/etcd-backup/etcd-backup/internal/testenv"
)

// config is a shared-key config for az's container under prefix.
func config(az *testenv.Azurite, prefix string) azblob.Config {
	return azblob.Config{
		Container: az.Container,
		Prefix:    prefix,
		Account:   az.Account,
		Endpoint:  az.ServiceURL(),
		Key:       az.Key,
	}
}

func open(t *testing.T, cfg azblob.Config) *azblob.Container {
	t.Helper()
	c, err := azblob.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("azblob.New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestConformance(t *testing.T) {
	az := testenv.SharedAzurite(t)
	var n atomic.Int64
	storagetest.Run(t, func(t *testing.T) storage.Backend {
		// A fresh prefix per subtest: an empty repository.
		return open(t, config(az, fmt.Sprintf("conformance/%d", n.Add(1))))
	})
}

// TestConformanceContainerRoot runs the suite at the root of fresh
// containers, so that prefix handling cannot hide a bug.
func TestConformanceContainerRoot(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Backend {
		return open(t, config(testenv.SharedAzurite(t), ""))
	})
}

// TestCredentialForms opens the repository with each form of credentials
// New accepts, from the environment as the command line does: a connection
// string, an account key, and a SAS token.
func TestCredentialForms(t *testing.T) {
	az := testenv.SharedAzurite(t)
	sas := containerSAS(t, az)
	forms := map[string][]string{
		"connection string":          {azblob.EnvConnectionString + "=" + az.ConnectionString()},
		"account key":                {azblob.EnvAccount + "=" + az.Account, azblob.EnvKey + "=" + az.Key, azblob.EnvEndpoint + "=" + az.ServiceURL()},
		"SAS token":                  {azblob.EnvSASToken + "=" + sas, azblob.EnvEndpoint + "=" + az.ServiceURL()},
		"SAS in a connection string": {azblob.EnvConnectionString + "=BlobEndpoint=" + az.ServiceURL() + ";SharedAccessSignature=" + sas},
	}
	for name, env := range forms {
		t.Run(name, func(t *testing.T) {
			vars := map[string]string{}
			for _, kv := range env {
				k, v, _ := strings.Cut(kv, "=")
				vars[k] = v
			}
			cfg := azblob.Config{Container: az.Container, Prefix: "creds/" + strings.ReplaceAll(name, " ", "-"), NoEntraID: true}
			cfg = cfg.FromEnv(func(k string) string { return vars[k] })
			b := storage.Wrap(open(t, cfg), storage.Policy{})
			ctx := t.Context()
			if err := b.Put(ctx, "obj", strings.NewReader("data")); err != nil {
				t.Fatalf("Put: %v", err)
			}
			if err := b.Put(ctx, "obj", strings.NewReader("again")); !errors.Is(err, storage.ErrExists) {
				t.Errorf("second Put: %v, want ErrExists", err)
			}
			var names []string
			if err := b.List(ctx, "", func(i storage.Info) error { names = append(names, i.Name); return nil }); err != nil {
				t.Fatalf("List: %v", err)
			}
			if len(names) != 1 || names[0] != "obj" {
				t.Errorf("List = %q", names)
			}
			if err := b.Remove(ctx, "obj"); err != nil {
				t.Errorf("Remove: %v", err)
			}
			loc := b.Location()
			for _, secret := range []string{az.Key, sas, "sig="} {
				if strings.Contains(loc, secret) {
					t.Errorf("Location %q holds a secret", loc)
				}
			}
		})
	}
}

// TestMissingContainer: a container that does not exist is ErrNotFound
// when opening, with advice.
func TestMissingContainer(t *testing.T) {
	az := testenv.SharedAzurite(t)
	cfg := config(az, "")
	cfg.Container = "no-such-container"
	_, err := azblob.New(t.Context(), cfg)
	if !errors.Is(err, storage.ErrNotFound) || !strings.Contains(err.Error(), "create it first") {
		t.Fatalf("New on a missing container: %v, want ErrNotFound with advice", err)
	}
}

// TestWrongKey: a bad key fails when opening, without retries, with
// advice, and without the key in the message.
func TestWrongKey(t *testing.T) {
	az := testenv.SharedAzurite(t)
	cfg := config(az, "")
	wrong := "AAAA" + az.Key[4:]
	cfg.Key = wrong
	_, err := azblob.New(storage.WithPolicy(t.Context(), storage.Policy{}), cfg)
	if err == nil {
		t.Fatal("New with a wrong key succeeded")
	}
	if storage.IsRetryable(err) || errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("a wrong key is retried: %v", err)
	}
	if strings.Contains(err.Error(), wrong) || !strings.Contains(err.Error(), "check the credentials") {
		t.Errorf("error %q: want advice and no key", err)
	}
}

// TestNoCredentials: with Entra ID refused and nothing set, New says what
// to set.
func TestNoCredentials(t *testing.T) {
	_, err := azblob.New(t.Context(), azblob.Config{Container: "c0ntainer", Account: "acct", NoEntraID: true})
	if !errors.Is(err, storage.ErrBadURL) || !strings.Contains(err.Error(), azblob.EnvConnectionString) {
		t.Fatalf("New without credentials: %v", err)
	}
}
