# Jobs shaped like derivations whose drvPath names a secret file, /dev/zero
# or a path with "..", or whose output lies outside the store: each fails
# alone, and no file is read or quoted. SECRET is filled in by the test.
{
  outputs = { self }:
    let
      salt = builtins.readFile ./salt.txt;
      real = builtins.derivation {
        name = "real"; inherit salt; system = "x86_64-linux";
        builder = "/bin/sh"; args = [ "-c" "echo ok > $out" ]; PATH = "/usr/bin:/bin";
      };
      fake = drvPath: out: {
        type = "derivation"; inherit drvPath; name = "fake"; system = "x86_64-linux";
        outputs = [ "out" ]; out = { outPath = out; }; outPath = out;
      };
      fakeOut = "/nix/store/00000000000000000000000000000000-fake";
    in {
      hydraJobs = {
        readSecret = fake "SECRET" fakeOut;
        zero = fake "/dev/zero" fakeOut;
        dotdot = fake "/nix/store/../..SECRET" fakeOut;
        outputOutside = fake real.drvPath "/etc/passwd";
        ok = real;
      };
    };
}
