def fibonacci(n: int) -> int:
    """Return the n-th Fibonacci number."""
    <FILL>


def main() -> None:
    for i in range(10):
        print(i, fibonacci(i))


if __name__ == "__main__":
    main()
