# Evaluates a NixOS configuration that uses ./module.nix against the nixpkgs
# at nixpkgs (a path) and returns, per nixbus unit, what deploy/nixos_test.go
# checks: the unit file systemd would get, and the unit's settings.
#   nix-instantiate --eval --strict --json --arg nixpkgs /path/to/nixpkgs deploy/nixos/test.nix
{ nixpkgs }:
let
  # A stand-in for the nixbus package: evaluation never builds it.
  nixbus = derivation {
    name = "nixbus-0.0.0";
    system = "x86_64-linux";
    builder = "/bin/sh";
    args = [ "-c" "exit 1" ];
  };
  nixos = import (nixpkgs + "/nixos/lib/eval-config.nix") {
    system = "x86_64-linux";
    modules = [
      ./module.nix
      ({ ... }: {
        boot.isContainer = true;
        networking.hostName = "ci1";
        services.nixbus = {
          enable = true;
          package = nixbus;
          nats.url = "nats://nats1.example.org:4222,nats://nats2.example.org:4222";
          nats.credentialsDir = "/var/lib/nixbus-secrets/nats";
          builders.x86_64-linux.count = 2;
          builders.aarch64-linux = { count = 1; remoteOnly = true; };
          systems = [ "x86_64-linux" "aarch64-linux" ];
          gerrit = {
            sshAddress = "review.example.org:29418";
            user = "nixbus";
            sshKeyFile = "/var/lib/nixbus-secrets/id_ed25519";
            knownHostsFile = "/var/lib/nixbus-secrets/known_hosts";
            projects = [ "lix" ];
          };
          cache.secretKeyFile = "/var/lib/nixbus-secrets/cache.sec";
          otlpEndpoint = "http://127.0.0.1:4318";
          logBaseUrl = "https://ci.example.org/logs";
          after = [ "nats.service" ];
          extraArgs.reporter = [ "--reporter.started-message" ];
        };
      })
    ];
  };
  inherit (nixos) config;
  lib = nixos.pkgs.lib;
  names = builtins.filter (lib.hasPrefix "nixbus-") (builtins.attrNames config.systemd.services);
in {
  trustedUsers = config.nix.trustedUsers;
  cacheUser = config.users.users.nixbus-cache.isSystemUser;
  units = lib.genAttrs names (n:
    let s = config.systemd.services.${n}; in {
      inherit (s) after wants requires wantedBy;
      serviceConfig = s.serviceConfig;
      text = config.systemd.units."${n}.service".text;
    });
}
