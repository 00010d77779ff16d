// NOT BUILT HERE: there is no Gradle or Android SDK on these machines.
// `cargo xtask test --only kotlin` compiles and tests this folder on the JVM
// with kotlinc, JNA and the JUnit 5 console instead (see README.md).
//
// An Android library module over POS Core. Before Gradle runs, provide:
//   build/generated/org/poscore/pos_ffi.kt  from `uniffi-bindgen generate --library
//       <unstripped libpos_ffi> --language kotlin --out-dir build/generated`
//   build/jniLibs/<abi>/libpos_ffi.so       from `cargo build -p pos-ffi --profile mobile
//       --target aarch64-linux-android` (and the other ABIs), with the Android NDK
// Neither is committed.

plugins {
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
}

// Gradle's own outputs go to build/gradle, so `gradle clean` keeps the
// generated bindings and the libraries above (all of build/ is gitignored).
layout.buildDirectory.set(layout.projectDirectory.dir("build/gradle"))

android {
    namespace = "org.poscore"
    compileSdk = 35

    defaultConfig {
        minSdk = 24
    }

    sourceSets {
        getByName("main") {
            // Hand-written Kotlin and the generated bindings (package org.poscore).
            java.srcDirs("src/main/kotlin", "build/generated")
            // libpos_ffi.so per ABI: arm64-v8a/, armeabi-v7a/, x86_64/ ...
            jniLibs.srcDirs("build/jniLibs")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    // The AAR carries JNA's native dispatch library for Android's ABIs.
    // 5.13.0 is the JNA version the JVM harness tests with.
    implementation("net.java.dev.jna:jna:5.13.0@aar")
    // The generated suspend functions and PosEngine.events() (a Flow) need it;
    // 1.8.0 is the version bundled with the Kotlin 2.4.20 compiler used here.
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-core:1.8.0")

    // src/test/kotlin is run by the JVM harness. Running it under Gradle would
    // also need JNA's plain jar, JUnit 5 (useJUnitPlatform) and a host build of
    // libpos_ffi on jna.library.path; this module does not set that up.
}
