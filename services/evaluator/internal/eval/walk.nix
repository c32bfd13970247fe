# The built-in evaluator's walk over hydraJobs, applied with `nix eval --json
# --apply`. It finds what nix-eval-jobs --force-recurse finds: derivations
# are jobs, other attribute sets are recursed into, null is skipped. Errors
# that builtins.tryEval catches (throw, assert) become { failed = true; }
# records whose message the caller asks nix for separately; anything else
# (abort, missing attributes, type errors) stops the walk, and the caller
# then walks smaller parts of the tree.
let
  isDrv = v: builtins.isAttrs v && (v.type or null) == "derivation";
  info = v: {
    drvPath = v.drvPath;
    name = v.name or "";
    system = v.system or "";
    outputs = builtins.listToAttrs
      (map (o: { name = o; value = v.${o}.outPath; }) (v.outputs or [ "out" ]));
  };
  at = path: root: builtins.foldl' (v: n: v.${n}) root path;
  walk = path: v:
    let r = builtins.tryEval v; in
    if !r.success then [ { attrPath = path; failed = true; } ]
    else if r.value == null then [ ]
    else if !builtins.isAttrs r.value then [ { attrPath = path; unsupported = builtins.typeOf r.value; } ]
    else
      let t = builtins.tryEval (r.value.type or null); in
      if !t.success then [ { attrPath = path; failed = true; } ]
      else if t.value == "derivation" then
        let i = builtins.tryEval (let x = info r.value; in builtins.deepSeq x x); in
        if i.success then [ (i.value // { attrPath = path; }) ]
        else [ { attrPath = path; failed = true; } ]
      else builtins.concatMap (n: walk (path ++ [ n ]) r.value.${n}) (builtins.attrNames r.value);
in
{
  # Every job at or below path.
  walk = path: root: walk path (at path root);
  # The jobs below the children of path from index `from` (included) to
  # `to` (excluded), in attrNames order.
  walkRange = path: from: to: root:
    let
      v = at path root;
      names = builtins.attrNames v;
    in
    builtins.concatMap (i: let n = builtins.elemAt names (from + i); in walk (path ++ [ n ]) v.${n})
      (builtins.genList (i: i) (to - from));
  # The names below path if it is an attribute set that is not a
  # derivation, else null.
  children = path: root:
    let v = at path root; in
    if builtins.isAttrs v && (v.type or null) != "derivation" then builtins.attrNames v else null;
  # Forces what walk forces at path, so that nix reports the error.
  probe = path: root:
    let v = at path root; in
    if isDrv v then builtins.deepSeq (info v) true else builtins.seq v true;
}
