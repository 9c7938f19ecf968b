"""What ``detvm info`` reports: a model's facts, or a package's and its chain's."""
from __future__ import annotations

from collections import Counter


def info_of(loaded) -> dict:
    """The facts of a Model, or of a Pipeline (a chain of stages, a package)."""
    if not hasattr(loaded, "stages"):
        facts = info_dict(loaded)
        if loaded.package is not None:
            facts["package"] = package_dict(loaded.package)
        return facts
    t = lambda ts: [{"name": x.name, "shape": list(x.shape), "precision": x.precision,
                     "dtype": x.dtype.name} for x in ts]
    facts = {"pipeline": loaded.hash, "name": loaded.name,
             "chain": [f"{role} {m.name}" for role, m in loaded.stages],
             "symbols": loaded.symbols, "inputs": t(loaded.inputs), "outputs": t(loaded.outputs),
             "gas_formula": str(loaded.gas_formula), "gas": loaded.gas,
             "stages": {role: info_dict(m) for role, m in loaded.stages}}
    if loaded.package is not None:
        facts["package"] = package_dict(loaded.package)
    return facts


def package_dict(info) -> dict:
    m = info.manifest
    return {"hash": info.hash, "format": m["format"], "semantics": m["semantics"],
            "tests": len(m["tests"]), "certificate": m["certificate"] is not None,
            "stages": [{"role": s["role"], "model": s["model"]} for s in m["stages"]]}


def print_info(info: dict) -> None:
    if "package" in info:
        p = info["package"]
        tests = f"{p['tests']} test{'s' if p['tests'] != 1 else ''} re-run at load: passed" \
            if p["tests"] else "no test data"
        print(f"package    {p['hash']}\n           {p['format']}, semantics {p['semantics']}, "
              f"{tests}, certificate {'included' if p['certificate'] else 'none'}")
    if "stages" not in info:
        print_model(info)
        return
    print(f"chain      {' -> '.join(info['chain'])}\npipeline   {info['pipeline']}")
    for s, n in info["symbols"].items():
        print(f"symbol     {s} <= {n}")
    at = ", ".join(f"{s} = {n}" for s, n in info["symbols"].items())
    print(f"gas        {info['gas_formula']} (the sum of the stages'"
          + (f"; {info['gas']} at {at})" if at else ")"))
    for role, stage in info["stages"].items():
        print(f"\n[{role}]")
        print_model(stage)


def info_dict(model) -> dict:
    """Everything known about a model before running it."""
    t = lambda ts: [{"name": x.name, "shape": list(x.shape), "precision": x.precision,
                     "dtype": x.dtype.name} for x in ts]
    facts = {"model": model.hash, "name": model.name, "semantics": model.program.semantics,
             "symbols": model.symbols, "inputs": t(model.inputs), "outputs": t(model.outputs),
             "gas": model.gas, "peak_memory": model.peak_memory}
    if model.symbols:
        facts.update(gas_formula=str(model.gas_formula),
                     peak_memory_formula=str(model.memory_formula))
    else:
        facts.update(input_length=model.input_length, input_type_size=model.input_type_size,
                     output_length=model.output_length,
                     output_type_size=model.output_type_size)
    return {**facts, "instructions": len(model.program.code),
            "ops": dict(sorted(Counter(i.op for i in model.program.code).items())),
            "backend": model.backend, "onnxruntime": _verdict(model),
            "metadata": model.metadata, **_cvm_facts(model)}


def _verdict(model) -> str | None:
    """The onnxruntime self-test's verdict on this machine (the CPU only)."""
    if model.ctx.device_type != "cpu" or model.ctx.backend == "numpy":
        return None
    from vm.ort import selftest
    return str(selftest.verdict())


def _cvm_facts(model) -> dict:
    """CVM's API facts of a model imported from CVM."""
    if "cvm.compat" not in model.metadata:
        return {}
    from vm.runtime import CVMError, load_model as cvm_model
    try:
        return {"cvm": cvm_model(model).info()}
    except CVMError as e:
        return {"cvm": {"error": e.message}}


def print_model(info: dict) -> None:
    io = lambda x: f"%{x['name']} [{', '.join(map(str, x['shape']))}] p{x['precision']} " \
                   f"{x['dtype']}"
    print(f"model      {info['name']}\nhash       {info['model']}\n"
          f"semantics  {info['semantics']}")
    for s, n in info["symbols"].items():
        print(f"symbol     {s} <= {n}")
    for x in info["inputs"]:
        print(f"input      {io(x)}")
    for x in info["outputs"]:
        print(f"output     {io(x)}")
    if info["symbols"]:
        at = ", ".join(f"{s} = {n}" for s, n in info["symbols"].items())
        print(f"gas        {info['gas_formula']}  ({info['gas']} at {at})\n"
              f"peak mem   {info['peak_memory_formula']} bytes  ({info['peak_memory']} at {at})")
    else:
        print(f"gas        {info['gas']}\npeak mem   {info['peak_memory']} bytes\n"
              f"CVM        input_length {info['input_length']}, input_type_size "
              f"{info['input_type_size']}, output_length {info['output_length']}, "
              f"output_type_size {info['output_type_size']}")
    ops = ", ".join(f"{k} {v}" for k, v in info["ops"].items())
    print(f"code       {info['instructions']} instructions: {ops}")
    print(f"backend    {info['backend']}")
    if info["onnxruntime"] is not None:
        print(f"self-test  {info['onnxruntime']}")
    for k, v in info["metadata"].items():
        print(f"meta       {k} = {v}")
    for k, v in info.get("cvm", {}).items():
        print(f"cvm        {k} = {v}")
