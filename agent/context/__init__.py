"""The whole-repository context engine (`v4code context`; the prefix of every ask/fix prompt).

Interface other modules rely on (keep it stable):
    pack = pack_repository(root, budget=None, fmt="xml", settings=None, console=None) -> Pack
    pack.text          the packed repository (deterministic, stable-prefix ordered)
    pack.total_tokens  exact V4 tokens of pack.text (<= pack.budget)
    pack.files         [PackedFile(path, tokens, mode, tier, ...)]
    pack.excluded      [Excluded(path, reason)]
    pack.manifest()    the JSON object of `v4code context --output-format json`
    RepoFiles(root)    discovery with the engine's ignore rules:
                       .paths() -> sorted relative posix paths that would be considered,
                       .is_ignored(rel_path) -> bool
"""
