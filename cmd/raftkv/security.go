package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
)

// loadSecurity reads the TLS files and the shared token the flags name.
func (o *options) loadSecurity() error {
	if o.tlsCert != "" {
		conf, err := loadMutualTLS(o.tlsCert, o.tlsKey, o.tlsCA)
		if err != nil {
			return err
		}
		o.tls = conf
	}
	token, err := loadToken(o.tokenFile, os.Getenv(tokenEnv))
	if err != nil {
		return err
	}
	o.token = token
	return nil
}

// loadMutualTLS builds the configuration of a node: its certificate for both roles, and the
// CA to verify peers as servers and as clients.
func loadMutualTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls_cert/--tls_key: %w", err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--tls_ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("--tls_ca: %s holds no PEM certificate", caFile)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// loadToken returns the shared token: the first line of file when one is named, else the
// environment's value. An empty token means admin endpoints stay open; a named file that is
// empty is a mistake, not a wish.
func loadToken(file, env string) (string, error) {
	if file == "" {
		return strings.TrimSpace(env), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--token_file: %w", err)
	}
	token, _, _ := strings.Cut(string(b), "\n")
	if token = strings.TrimSpace(token); token == "" {
		return "", errors.New("--token_file: the file holds no token")
	}
	return token, nil
}
