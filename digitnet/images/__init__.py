"""Reading images and turning them into MNIST-style 28x28 inputs."""
