"""`ondeck package`: a trained scikit-learn estimator -> a model package directory."""
from __future__ import annotations


def configure(parser) -> None:
    parser.add_argument("--estimator", required=True, metavar="M.joblib",
                        help="the fitted estimator or Pipeline, saved with joblib (your own file: it is unpickled)")
    parser.add_argument("--reference", required=True, metavar="REF.csv",
                        help="reference rows (CSV or Parquet) with the estimator's feature columns")
    parser.add_argument("--name", required=True, help="model name")
    parser.add_argument("--version", required=True, help="model version")
    parser.add_argument("--out", required=True, metavar="DIR", help="package directory to create")
    parser.add_argument("--parity-tolerance", type=float, default=1e-4,
                        help="largest |onnx - sklearn| allowed on the reference rows (default 1e-4)")
    parser.add_argument("--nan-policy", choices=("reject", "allow"), default="reject",
                        help="what the server does with NaN/inf inputs (default reject: a 400)")
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")


def run(args) -> int:
    import json

    from ondeck.package.build import package_from_files

    out = package_from_files(
        args.estimator, args.reference, name=args.name, version=args.version, out=args.out,
        parity_tolerance=args.parity_tolerance, nan_policy=args.nan_policy, overwrite=args.overwrite,
    )
    meta = json.loads((out / "ondeck.json").read_text())
    print(f"packaged {meta['name']}:{meta['version']} ({meta['task']}, {len(meta['inputs'][0]['features'])} features) "
          f"into {out}; parity max |onnx - sklearn| = {meta['parity']['max_abs_diff']:.2e}")
    return 0
