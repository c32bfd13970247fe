# The built-in evaluator's steps, applied in one `nix repl` to one attribute
# of hydraJobs, or a chunk of a large set's children, at a time. `node root
# path` says what the attribute at path is, as a string: "d" and the JSON
# of a derivation's job fields, "s" and the JSON list of an attribute set's
# names (to walk next), "n" for null (skipped), "u" and the type of
# anything else. An attribute that fails to
# evaluate fails this expression, and the repl prints nix's own error.
#
# A path element is a name, or the index of the name in attrNames order
# (for names that are unsafe to put in an expression).
#
# It is defined in the repl before the flake is loaded, so the flake's
# outputs (which the repl adds to its scope) cannot shadow `builtins`.
let
  info = v: {
    drvPath = v.drvPath;
    name = v.name or "";
    system = v.system or "";
    outputs = builtins.listToAttrs
      (map (o: { name = o; value = v.${o}.outPath; }) (v.outputs or [ "out" ]));
  };
  step = v: n: if builtins.isString n then v.${n} else v.${builtins.elemAt (builtins.attrNames v) n};
  describe = v:
    if v == null then "n"
    else if !builtins.isAttrs v then "u" + builtins.typeOf v
    else if (v.type or null) == "derivation" then "d" + builtins.toJSON (info v)
    else "s" + builtins.toJSON (builtins.attrNames v);
in
{
  node = root: path: describe (builtins.foldl' step root path);
  # The children of the set at path from index `from` (included) to `to`
  # (excluded), in attrNames order: "c" and the JSON list of what node
  # would say of each, or "f" for one whose error builtins.tryEval caught
  # (asked again with node, for its message).
  chunk = root: path: from: to:
    let
      v = builtins.foldl' step root path;
      names = builtins.attrNames v;
    in
    "c" + builtins.toJSON (builtins.genList (i:
      let r = builtins.tryEval (describe v.${builtins.elemAt names (from + i)}); in
      if r.success then r.value else "f") (to - from));
}
