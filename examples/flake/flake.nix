{
  description = "nixbus example: every outcome a run can have";

  # No inputs: builders need nothing but /bin/sh and coreutils on the host.
  outputs = { self }:
    let
      system = "x86_64-linux";
      # A salt file, when present, makes every derivation new, so tests can
      # ask for real builds on a store that already holds earlier ones.
      salt = if builtins.pathExists ./salt.txt then builtins.readFile ./salt.txt else "";
      job = name: script: builtins.derivation {
        inherit name system salt;
        builder = "/bin/sh";
        args = [ "-c" script ];
        PATH = "/usr/bin:/bin";
      };
      # A chain of three jobs, each reading the previous one's output.
      chain1 = job "chain1" "echo one > $out";
      chain2 = job "chain2" "cat ${chain1} > $out; echo two >> $out";
      chain3 = job "chain3" "cat ${chain2} > $out; echo three >> $out";
      broken = job "broken" "echo 'this job fails on purpose' >&2; exit 1";
    in {
      hydraJobs = {
        inherit chain1 chain2 chain3 broken;
        nested = {
          hello = job "hello" "echo hello > $out";
          # Depends on chain1 through an intermediate derivation that is not a job.
          wrapped = job "wrapped" "cat ${job "helper" "cat ${chain1} > $out"} > $out";
        };
        # Depends on the failing job: skipped with "dependency broken failed".
        after-broken = job "after-broken" "cat ${broken} > $out";
        # Throws during evaluation: reported as a failure with this message.
        eval-error = throw "this job does not evaluate";
      };
    };
}
