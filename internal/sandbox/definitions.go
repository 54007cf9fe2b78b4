package sandbox

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"os"
)

// Definitions are the vhosts, users and permissions a sandbox RabbitMQ node loads at boot, in
// RabbitMQ's definitions format.
type Definitions struct {
	VHosts      []string
	Users       []User
	Permissions []Permission
}

// User is a RabbitMQ user with a password.
type User struct {
	Name, Password string
	// Tags are RabbitMQ's user tags, comma-separated ("administrator"). Default none: no access
	// to the management API.
	Tags string
}

// Permission is what rabbitmqctl set_permissions grants: regular expressions over the names of
// the exchanges and queues a user may configure, write and read in a vhost.
type Permission struct {
	User, VHost            string
	Configure, Write, Read string
}

// withAdmin returns d with an administrator who may do anything on every vhost, "/" included.
func (d Definitions) withAdmin(name, password string) Definitions {
	d.VHosts = append([]string{"/"}, d.VHosts...)
	d.Users = append([]User{{Name: name, Password: password, Tags: "administrator"}}, d.Users...)
	perms := make([]Permission, 0, len(d.VHosts)+len(d.Permissions))
	for _, v := range d.VHosts {
		perms = append(perms, Permission{User: name, VHost: v, Configure: ".*", Write: ".*", Read: ".*"})
	}
	d.Permissions = append(perms, d.Permissions...)
	return d
}

func (d Definitions) write(path string) error {
	type user struct {
		Name         string `json:"name"`
		PasswordHash string `json:"password_hash"`
		Hashing      string `json:"hashing_algorithm"`
		Tags         string `json:"tags"`
	}
	type vhost struct {
		Name string `json:"name"`
	}
	type permission struct {
		User      string `json:"user"`
		VHost     string `json:"vhost"`
		Configure string `json:"configure"`
		Write     string `json:"write"`
		Read      string `json:"read"`
	}
	var out struct {
		Users       []user       `json:"users"`
		VHosts      []vhost      `json:"vhosts"`
		Permissions []permission `json:"permissions"`
	}
	for _, u := range d.Users {
		out.Users = append(out.Users, user{Name: u.Name, PasswordHash: passwordHash(u.Password), Hashing: "rabbit_password_hashing_sha256", Tags: u.Tags})
	}
	for _, v := range d.VHosts {
		out.VHosts = append(out.VHosts, vhost{Name: v})
	}
	for _, p := range d.Permissions {
		out.Permissions = append(out.Permissions, permission(p))
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// passwordHash is RabbitMQ's rabbit_password_hashing_sha256: base64 of a 4-byte salt followed by
// SHA-256 of the salt and the password.
func passwordHash(password string) string {
	salt := make([]byte, 4)
	if _, err := rand.Read(salt); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	sum := sha256.Sum256(append(append([]byte{}, salt...), password...))
	return base64.StdEncoding.EncodeToString(append(salt, sum[:]...))
}
