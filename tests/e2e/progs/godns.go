package main

// Dials HOST:PORT by name with Go's own resolver (CGO_ENABLED=0): prints "dialed" or
// "dial error: ...".
import (
	"fmt"
	"net"
	"os"
)

func main() {
	c, err := net.Dial("tcp", net.JoinHostPort(os.Args[1], os.Args[2]))
	if err != nil {
		fmt.Println("dial error:", err)
		return
	}
	c.Close()
	fmt.Println("dialed")
}
