"""`python -m lora_llava.predict ...`: the command-line name of lora_llava.eval.predict (see its help)."""

from lora_llava.eval.predict import main

if __name__ == "__main__":
    main()
