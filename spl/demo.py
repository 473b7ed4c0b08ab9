def run_demo(out_dir, device): return 0
