"""Where students live and how they leave: list every model with its path, lineage and size;
export one as a diffusers pipeline or a diffusers-format LoRA."""

from __future__ import annotations

from pathlib import Path

from .args import DATA_DIR, arg, command, open_store


@command("models", "list every model: name, family, path, lineage and size on disk",
         arg("--json", action="store_true", help="print the list as JSON"), DATA_DIR)
def models(args) -> list[dict] | str:
    from .. import registry

    rows = registry.inventory(open_store(args))
    if args.json:
        return rows
    lines = [f"{'name':<24} {'family':<9} {'kind':<12} {'size':>9}  lineage / path"]
    for r in rows:
        size = f"{r['bytes'] / 2**20:.1f} MB"
        lines.append(f"{r['name']:<24} {r['family'] or '?':<9} {r['kind'] or '':<12} {size:>9}  "
                     f"{' -> '.join(r['lineage'])}")
        lines.append(f"{'':<58}{r['path']}" + (f"  (adapter over {r['base']})" if "base" in r else ""))
    return "\n".join(lines)


@command("export", "write a model as a diffusers pipeline directory or a diffusers-format LoRA, with a model card",
         arg("name", metavar="NAME", help="a registered or shipped model name"),
         arg("--out", required=True, help="a new directory to create"),
         arg("--format", default="diffusers", help="diffusers (a pipeline DiffusionPipeline.from_pretrained "
                                                   "loads) or lora (a LoRA student's adapter for load_lora_weights)"),
         DATA_DIR)
def export(args) -> dict:
    from ..export import check_format, check_out

    check_format(args.format)
    out = Path(args.out).expanduser().absolute()
    check_out(out)
    from ..export.write import export as write

    return write(open_store(args), args.name, out, args.format)
