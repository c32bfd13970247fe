# Two failing jobs whose names are not UTF-8 ("a<FD>", "a<FE>" are raw bytes
# 0xfd and 0xfe once the test fills them in) and one whose name holds BEL
# and ESC: each must be its own failed job, under a printable name.
{
  outputs = { self }:
    let
      salt = builtins.readFile ./salt.txt;
      job = name: script: builtins.derivation {
        inherit name salt; system = "x86_64-linux";
        builder = "/bin/sh"; args = [ "-c" script ]; PATH = "/usr/bin:/bin";
      };
    in {
      hydraJobs = {
        "a<FD>" = job "a1" "exit 1";
        "a<FE>" = job "a2" "exit 1";
        "bell<BEL><ESC>[31mred" = job "bell" "echo ok > $out";
        ok = job "ok" "echo ok > $out";
      };
    };
}
