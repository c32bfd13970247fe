# services.nixbus: nixbus's services as systemd units on NixOS, one unit per
# service (and per builder), secrets handed over with LoadCredential= and
# found by name in $CREDENTIALS_DIRECTORY (pkg/secret), units hardened as far
# as their access to Nix allows, restarted when they fail.
#
#   imports = [ ./deploy/nixos/module.nix ];
#   services.nixbus = {
#     enable = true;
#     package = nixbus;                       # a package with bin/nixbus
#     nats.url = "nats://nats.example.org:4222";
#     nats.credentialsDir = "/var/lib/nixbus-secrets/nats";  # <role>.nk from `nixbus nats-config`
#     builders.x86_64-linux.count = 2;
#     gerrit = { sshAddress = "review.example.org:29418"; user = "nixbus";
#                sshKeyFile = "/var/lib/nixbus-secrets/id_ed25519";
#                knownHostsFile = "/var/lib/nixbus-secrets/known_hosts"; };
#     otlpEndpoint = "http://jaeger.example.org:4318";
#   };
#
# deploy/nixos/test.nix evaluates a configuration using it (`make test`).
{ config, lib, pkgs, ... }:

with lib;

let
  cfg = config.services.nixbus;

  allServices = [ "gerrit-ingest" "evaluator" "planner" "cache-uploader" "reporter" ];
  # Services that run nix (and so need the Nix daemon's socket and a
  # store they may write through it); the others need no Nix at all.
  nixServices = [ "evaluator" "builder" "cache-uploader" ];
  cacheUser = "nixbus-cache";

  # A secret reaches a unit as a systemd credential: LoadCredential=
  # <name>:<file> copies the file into the unit's $CREDENTIALS_DIRECTORY
  # (readable by the unit's user only), and the flag names it there as
  # %d/<name>. The names are the ones nixbus's flags default to when
  # $CREDENTIALS_DIRECTORY holds them (pkg/secret).
  cred = name: file: optional (file != null) { inherit name file; };
  credArg = flag: name: [ flag { raw = "%d/${name}"; } ];

  natsCred = role:
    if cfg.nats.credentialsDir == null then { creds = [ ]; args = [ ]; }
    else if cfg.nats.auth == "nkey" then {
      creds = cred "nats-nkey" "${cfg.nats.credentialsDir}/${role}.nk";
      args = credArg "--nats.nkey-file" "nats-nkey";
    } else {
      creds = cred "nats-password" "${cfg.nats.credentialsDir}/${role}.password";
      args = [ "--nats.user" role ] ++ credArg "--nats.password-file" "nats-password";
    };

  gerritArgs = with cfg.gerrit;
    optionals (sshAddress != null) ([ "--gerrit.ssh.address" sshAddress ]
      ++ optionals (user != null) [ "--gerrit.ssh.user" user ]
      ++ credArg "--gerrit.ssh.key-file" "gerrit-ssh-key"
      ++ credArg "--gerrit.ssh.known-hosts-file" "gerrit-known-hosts")
    ++ optionals (httpUrl != null) ([ "--gerrit.http.url" httpUrl ]
      ++ optionals (httpUser != null) [ "--gerrit.http.user" httpUser ]
      ++ optionals (httpPasswordFile != null) (credArg "--gerrit.http.password-file" "gerrit-http-password"))
    ++ optionals (reviewVia != null) [ "--gerrit.review-via" reviewVia ];
  gerritCreds = with cfg.gerrit;
    cred "gerrit-ssh-key" sshKeyFile
    ++ cred "gerrit-known-hosts" knownHostsFile
    ++ cred "gerrit-http-password" httpPasswordFile;

  # What each service gets beyond the shared flags.
  serviceArgs = {
    gerrit-ingest = gerritArgs
      ++ optionals (cfg.gerrit.projects != [ ]) [ "--gerrit-ingest.projects" (concatStringsSep "," cfg.gerrit.projects) ];
    evaluator = gerritArgs
      ++ [ "--evaluator.work-dir" "/var/lib/nixbus/evaluator/work" ] # checkouts
      ++ optionals (cfg.cache.checkUrl != null) [ "--evaluator.cache-url" cfg.cache.checkUrl ]
      ++ optionals (cfg.systems != [ ]) [ "--evaluator.systems" (concatStringsSep "," cfg.systems) ];
    planner = [ ];
    cache-uploader = [ "--cache-uploader.cache-url" cfg.cache.url ]
      ++ credArg "--cache-uploader.secret-key-file" "cache-signing-key"
      ++ optionals (cfg.cache.builders != [ ]) [ "--cache-uploader.builders" (concatStringsSep "," cfg.cache.builders) ];
    reporter = gerritArgs ++ optionals (cfg.logBaseUrl != null) [ "--reporter.log-base-url" cfg.logBaseUrl ];
  };
  serviceCreds = {
    gerrit-ingest = gerritCreds;
    evaluator = gerritCreds;
    planner = [ ];
    cache-uploader = cred "cache-signing-key" cfg.cache.secretKeyFile;
    reporter = gerritCreds;
  };

  # ExecStart= quoting: each argument in double quotes, with systemd's
  # specifiers (%) and variables ($) kept literal, except {raw = …} parts.
  quote = a:
    if isAttrs a then ''"${a.raw}"''
    else ''"'' + replaceStrings [ "\\" "\"" "%" "$" "\n" ] [ "\\\\" "\\\"" "%%" "$$" "\\n" ] a + ''"'';

  # One unit: `nixbus <service> <flags>`, with its own state directory.
  mkUnit = { name, service, role, args, creds, description, httpAddress }:
    let
      nats = natsCred role;
      usesNix = elem service nixServices;
      dir = removePrefix "nixbus-" name;
      state = "/var/lib/nixbus/${dir}";
      argv = [ "${cfg.package}/bin/nixbus" service
        "--nats.url" cfg.nats.url
        "--state-dir" state
        "--http.address=${httpAddress}"
        "--log.format" "json"
      ] ++ nats.args
        ++ optionals (cfg.otlpEndpoint != null) [ "--otel.endpoint" cfg.otlpEndpoint ]
        ++ concatMap (o: [ "--nix.option" o ]) cfg.nixOptions
        ++ args
        ++ (cfg.extraArgs.${service} or [ ]);
    in {
      inherit description;
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ] ++ cfg.after;
      after = [ "network-online.target" ] ++ optional usesNix "nix-daemon.socket" ++ cfg.after;
      requires = optional usesNix "nix-daemon.socket";
      path = optionals usesNix [ cfg.nixPackage pkgs.git pkgs.openssh ];
      environment = {
        HOME = state;
        XDG_CACHE_HOME = "${state}/.cache";
      } // optionalAttrs usesNix { NIX_REMOTE = "daemon"; };
      unitConfig.StartLimitIntervalSec = 0;
      serviceConfig = {
        ExecStart = concatMapStringsSep " " quote argv;
        Restart = "always";
        RestartSec = "5s";
        # SIGTERM stops a service cleanly (builds get --builder.kill-grace).
        KillSignal = "SIGTERM";
        TimeoutStopSec = "60s";
        LoadCredential = map (c: "${c.name}:${c.file}") (nats.creds ++ creds);
        # Signing store paths (nix store sign) is for the daemon's trusted
        # users: the cache-uploader has a static user in nix.trustedUsers;
        # every other unit runs as a user of its own, made at start.
        DynamicUser = service != "cache-uploader";
        StateDirectory = "nixbus/${dir}";
        StateDirectoryMode = "0700";
        RuntimeDirectory = name;
        UMask = "0077";
        # Nothing of the system is writable but the state directory: the
        # store is written by the Nix daemon, reached through its socket.
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        NoNewPrivileges = true;
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
        SystemCallArchitectures = "native";
      } // optionalAttrs (service == "cache-uploader") {
        User = cacheUser;
        Group = cacheUser;
        # A file:// cache is served by a web server: readable by all.
        StateDirectoryMode = "0755";
        UMask = "0022";
      } // optionalAttrs (!usesNix) {
        # Go alone, no Nix: no writable and executable memory, no
        # privileged system calls.
        MemoryDenyWriteExecute = true;
        SystemCallFilter = [ "@system-service" "~@privileged" ];
      };
    };

  units =
    listToAttrs (map (s: nameValuePair "nixbus-${s}" (mkUnit {
      name = "nixbus-${s}";
      service = s;
      role = s;
      args = serviceArgs.${s};
      creds = serviceCreds.${s};
      description = "nixbus ${s}";
      httpAddress = cfg.httpAddresses.${s} or "";
    })) cfg.services)
    // listToAttrs (concatLists (mapAttrsToList (system: b:
      genList (i:
        let name = "nixbus-builder-${system}-${toString (i + 1)}"; in
        nameValuePair name (mkUnit {
          inherit name;
          service = "builder";
          role = "builder";
          args = [ "--builder.system" system
                   "--builder.name" "${config.networking.hostName}-${system}-${toString (i + 1)}"
                   "--builder.concurrency" (toString b.concurrency)
                   # Out-links are GC roots: the daemon must see them.
                   "--builder.work-dir" "/var/lib/nixbus/${removePrefix "nixbus-" name}/work" ]
            ++ optional b.remoteOnly "--builder.remote-only"
            ++ b.extraArgs;
          creds = [ ];
          description = "nixbus builder ${toString (i + 1)} of ${system}";
          httpAddress = "";
        })) b.count) cfg.builders));

in {
  options.services.nixbus = {
    enable = mkEnableOption "nixbus, a Gerrit-driven CI for Nix flakes";

    package = mkOption {
      type = types.package;
      description = "The nixbus package; its bin/nixbus runs every service.";
    };

    nixPackage = mkOption {
      type = types.package;
      default = config.nix.package;
      defaultText = "config.nix.package";
      description = "Nix the evaluator, builders and cache-uploader run (as clients of the Nix daemon).";
    };

    services = mkOption {
      type = types.listOf (types.enum allServices);
      default = allServices;
      description = ''
        Services this machine runs, each as its own unit nixbus-<service>.
        Builders are configured in <option>builders</option>.
      '';
    };

    builders = mkOption {
      default = { };
      example = { x86_64-linux.count = 2; aarch64-linux = { count = 1; remoteOnly = true; }; };
      description = "Builder units per Nix system: nixbus-builder-<system>-<n>.";
      type = types.attrsOf (types.submodule {
        options = {
          count = mkOption { type = types.ints.unsigned; default = 1; description = "Builder units of this system."; };
          concurrency = mkOption { type = types.ints.positive; default = 1; description = "Builds one unit runs at once."; };
          remoteOnly = mkOption { type = types.bool; default = false; description = "Hand every build to Nix's remote builders (--builder.remote-only)."; };
          extraArgs = mkOption { type = types.listOf types.str; default = [ ]; description = "More builder flags."; };
        };
      });
    };

    systems = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "x86_64-linux" "aarch64-linux" ];
      description = "Systems the evaluator keeps jobs of (default: the evaluator's own).";
    };

    nats = {
      url = mkOption {
        type = types.str;
        default = "nats://127.0.0.1:4222";
        description = "NATS server (or cluster seed) URLs, comma separated; no credentials in it.";
      };
      auth = mkOption {
        type = types.enum [ "nkey" "password" ];
        default = "nkey";
        description = "Kind of the per-role secrets in <option>nats.credentialsDir</option>.";
      };
      credentialsDir = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/var/lib/nixbus-secrets/nats";
        description = ''
          Directory `nixbus nats-config --dir` wrote: <role>.nk (or
          <role>.password). Each unit gets only its own role's secret, as the
          credential nats-nkey (or nats-password). A path as a string, so the
          secret never enters the Nix store.
        '';
      };
    };

    gerrit = {
      sshAddress = mkOption { type = types.nullOr types.str; default = null; example = "review.example.org:29418"; description = "Gerrit's SSH host:port (null: no Gerrit; votes are logged)."; };
      user = mkOption { type = types.nullOr types.str; default = null; description = "Gerrit account (SSH)."; };
      sshKeyFile = mkOption { type = types.nullOr types.str; default = null; description = "Private key of the account; handed over as credential gerrit-ssh-key."; };
      knownHostsFile = mkOption { type = types.nullOr types.str; default = null; description = "known_hosts with Gerrit's host key; credential gerrit-known-hosts."; };
      httpUrl = mkOption { type = types.nullOr types.str; default = null; description = "Gerrit web root, for REST votes and HTTPS fetches."; };
      httpUser = mkOption { type = types.nullOr types.str; default = null; description = "Gerrit account (HTTP)."; };
      httpPasswordFile = mkOption { type = types.nullOr types.str; default = null; description = "The account's HTTP password; credential gerrit-http-password."; };
      reviewVia = mkOption { type = types.nullOr (types.enum [ "ssh" "rest" ]); default = null; description = "How votes are posted (default: SSH when configured)."; };
      projects = mkOption { type = types.listOf types.str; default = [ ]; description = "Projects gerrit-ingest watches (default: all)."; };
    };

    cache = {
      url = mkOption {
        type = types.str;
        default = "file:///var/lib/nixbus/cache-uploader/cache";
        description = "Binary cache the cache-uploader copies to.";
      };
      checkUrl = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "https://cache.example.org";
        description = "Cache whose contents the evaluator counts as cached (null: the local store).";
      };
      secretKeyFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Key signing uploaded outputs (credential cache-signing-key); required when the cache-uploader runs.";
      };
      builders = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Builders whose outputs are in this host's store (--cache-uploader.builders; default: all).";
      };
    };

    otlpEndpoint = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "http://127.0.0.1:4318";
      description = "OTLP/HTTP endpoint every unit sends its spans to (null: no tracing).";
    };

    logBaseUrl = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "https://ci.example.org/logs";
      description = "Base of the build-log links in reviews; the reporter serves /logs/ on its HTTP address.";
    };

    httpAddresses = mkOption {
      type = types.attrsOf types.str;
      default = {
        reporter = "127.0.0.1:9464";
        planner = "127.0.0.1:9465";
        evaluator = "127.0.0.1:9466";
        gerrit-ingest = "127.0.0.1:9467";
        cache-uploader = "127.0.0.1:9468";
      };
      description = "Where each service serves /metrics (and the reporter /logs/); builders serve none.";
    };

    nixOptions = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "substituters=https://cache.nixos.org" ];
      description = "NAME=VALUE options passed to every nix call (--nix.option).";
    };

    after = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "nats.service" ];
      description = "Units every nixbus unit starts after (and wants), e.g. a local NATS server's.";
    };

    extraArgs = mkOption {
      type = types.attrsOf (types.listOf types.str);
      default = { };
      example = { reporter = [ "--reporter.started-message" ]; };
      description = "More flags per service.";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = elem "cache-uploader" cfg.services -> cfg.cache.secretKeyFile != null;
        message = "services.nixbus.cache.secretKeyFile is required when the cache-uploader runs";
      }
      {
        assertion = cfg.gerrit.sshAddress != null -> (cfg.gerrit.sshKeyFile != null && cfg.gerrit.knownHostsFile != null);
        message = "services.nixbus.gerrit: an SSH address needs sshKeyFile and knownHostsFile";
      }
    ];

    users.users.${cacheUser} = mkIf (elem "cache-uploader" cfg.services) {
      isSystemUser = true;
      group = cacheUser;
      description = "nixbus cache-uploader";
    };
    users.groups.${cacheUser} = mkIf (elem "cache-uploader" cfg.services) { };
    # Dynamic users reach the store through the daemon (nix.allowedUsers
    # must let them, as its default "*" does); the uploader signs, which
    # only trusted users may. (A definition replaces the default "root".)
    nix.trustedUsers = mkIf (elem "cache-uploader" cfg.services) [ "root" cacheUser ];

    systemd.services = units;
  };
}
