package web

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"nixbus.dev/nixbus/pkg/bus"
)

const (
	sessionCookie = "nixbus_session"
	loginCookie   = "nixbus_login"
)

// user is who a session belongs to. The zero user is anonymous.
type user struct {
	Sub   string `json:"s"`
	Name  string `json:"n"`
	Admin bool   `json:"a"`
	Exp   int64  `json:"e"`
	// CSRF is the token every form of this session carries.
	CSRF string `json:"c"`
}

func (u user) LoggedIn() bool { return u.Sub != "" }

// loginState is what the login cookie holds between /login and the
// provider's redirect back.
type loginState struct {
	State    string `json:"st"`
	Nonce    string `json:"no"`
	Verifier string `json:"v"`
	Next     string `json:"nx"`
	Exp      int64  `json:"e"`
}

// auth signs cookies and talks to the OIDC provider, found lazily (the
// provider may start after nixbus).
type auth struct {
	cfg    Config
	key    []byte
	secret string

	mu       sync.Mutex
	provider *oidc.Provider
}

func (a *auth) enabled() bool { return a.cfg.Issuer != "" }

func (a *auth) sign(v any) (string, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode cookie: %w", err)
	}
	body := base64.RawURLEncoding.EncodeToString(data)
	return body + "." + base64.RawURLEncoding.EncodeToString(a.mac(body)), nil
}

func (a *auth) mac(body string) []byte {
	m := hmac.New(sha256.New, a.key)
	m.Write([]byte(body))
	return m.Sum(nil)
}

// open checks a signed cookie value and decodes it into v.
func (a *auth) open(value string, v any) bool {
	body, sig, ok := strings.Cut(value, ".")
	if !ok || len(value) > 4096 {
		return false
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, a.mac(body)) {
		return false
	}
	data, err := base64.RawURLEncoding.DecodeString(body)
	return err == nil && json.Unmarshal(data, v) == nil
}

// user is the request's logged-in user, or the anonymous one.
func (a *auth) user(r *http.Request) user {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return user{}
	}
	var u user
	if !a.open(c.Value, &u) || u.Sub == "" || time.Now().Unix() > u.Exp {
		return user{}
	}
	return u
}

func (a *auth) setCookie(w http.ResponseWriter, name, value, path string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: path, MaxAge: maxAge, HttpOnly: true,
		Secure: a.cfg.secure(), SameSite: http.SameSiteLaxMode})
}

func (a *auth) oauth(ctx context.Context) (*oidc.Provider, *oauth2.Config, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.provider == nil {
		p, err := oidc.NewProvider(ctx, a.cfg.Issuer)
		if err != nil {
			return nil, nil, fmt.Errorf("discover %s: %w", a.cfg.Issuer, err)
		}
		a.provider = p
	}
	scopes := []string{oidc.ScopeOpenID, "profile", "email"}
	if a.cfg.AdminGroup != "" {
		scopes = append(scopes, a.cfg.GroupsClaim)
	}
	return a.provider, &oauth2.Config{
		ClientID: a.cfg.ClientID, ClientSecret: a.secret, Endpoint: a.provider.Endpoint(),
		RedirectURL: strings.TrimRight(a.cfg.BaseURL, "/") + "/auth/callback", Scopes: scopes,
	}, nil
}

func random() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// localPath keeps a post-login redirect on this site.
func localPath(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/"
	}
	return next
}

// login sends the browser to the provider, with state, nonce and PKCE.
func (a *auth) login(w http.ResponseWriter, r *http.Request) error {
	_, oc, err := a.oauth(r.Context())
	if err != nil {
		return err
	}
	st := loginState{State: random(), Nonce: random(), Verifier: oauth2.GenerateVerifier(),
		Next: localPath(r.URL.Query().Get("next")), Exp: time.Now().Add(10 * time.Minute).Unix()}
	v, err := a.sign(st)
	if err != nil {
		return err
	}
	a.setCookie(w, loginCookie, v, "/auth/", 600)
	http.Redirect(w, r, oc.AuthCodeURL(st.State, oidc.Nonce(st.Nonce), oauth2.S256ChallengeOption(st.Verifier)), http.StatusFound)
	return nil
}

var errLogin = errors.New("login failed")

// callback finishes a login: code for tokens, the ID token checked, the
// session cookie set. It returns where to go next.
func (a *auth) callback(w http.ResponseWriter, r *http.Request) (user, string, error) {
	c, err := r.Cookie(loginCookie)
	var st loginState
	if err != nil || !a.open(c.Value, &st) || time.Now().Unix() > st.Exp {
		return user{}, "", fmt.Errorf("%w: no login in progress", errLogin)
	}
	a.setCookie(w, loginCookie, "", "/auth/", -1)
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		return user{}, "", fmt.Errorf("%w: provider says %.100q", errLogin, e)
	}
	if !hmac.Equal([]byte(q.Get("state")), []byte(st.State)) {
		return user{}, "", fmt.Errorf("%w: state mismatch", errLogin)
	}
	p, oc, err := a.oauth(r.Context())
	if err != nil {
		return user{}, "", err
	}
	tok, err := oc.Exchange(r.Context(), q.Get("code"), oauth2.VerifierOption(st.Verifier))
	if err != nil {
		return user{}, "", fmt.Errorf("%w: exchange code: %w", errLogin, err)
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := p.Verifier(&oidc.Config{ClientID: a.cfg.ClientID}).Verify(r.Context(), raw)
	if err != nil {
		return user{}, "", fmt.Errorf("%w: id token: %w", errLogin, err)
	}
	if !hmac.Equal([]byte(idt.Nonce), []byte(st.Nonce)) {
		return user{}, "", fmt.Errorf("%w: nonce mismatch", errLogin)
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return user{}, "", fmt.Errorf("%w: claims: %w", errLogin, err)
	}
	u := a.userOf(idt.Subject, claims)
	v, err := a.sign(u)
	if err != nil {
		return user{}, "", err
	}
	a.setCookie(w, sessionCookie, v, "/", int(a.cfg.SessionTTL/time.Second))
	return u, st.Next, nil
}

// userOf decides who the claims name and whether they are an admin: their
// subject, verified e-mail or preferred user name is in Admins, or
// AdminGroup is among their groups.
func (a *auth) userOf(sub string, claims map[string]any) user {
	str := func(k string) string { s, _ := claims[k].(string); return s }
	email, name := str("email"), str("preferred_username")
	verified, _ := claims["email_verified"].(bool)
	u := user{Sub: sub, Name: firstOf(name, email, str("name"), sub), Exp: time.Now().Add(a.cfg.SessionTTL).Unix(), CSRF: random()}
	u.Admin = slices.Contains(a.cfg.Admins, sub) || (email != "" && verified && slices.Contains(a.cfg.Admins, email)) ||
		(name != "" && slices.Contains(a.cfg.Admins, name))
	if g := a.cfg.AdminGroup; g != "" && !u.Admin {
		if groups, ok := claims[a.cfg.GroupsClaim].([]any); ok {
			for _, x := range groups {
				if s, _ := x.(string); s == g {
					u.Admin = true
				}
			}
		}
	}
	u.Name = bus.Truncate(u.Name, 100)
	return u
}

func firstOf(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}
