// Not built on these machines (no Android SDK): reference code.

plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
    id("org.jetbrains.kotlin.plugin.compose")
}

android {
    namespace = "org.poscore.demo.app"
    compileSdk = 35

    defaultConfig {
        applicationId = "org.poscore.demo.app"
        minSdk = 26
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
    }

    flavorDimensions += "mode"
    productFlavors {
        // No hardware, no network: DemoShop (virtual clock, processor simulator,
        // simulated readers). Needs libpos_ffi built with the `simulator` feature (a default one).
        create("demo") {
            dimension = "mode"
            applicationIdSuffix = ".demo"
            buildConfigField("boolean", "DEMO_MODE", "true")
            buildConfigField("String", "GATEWAY_URL", "\"\"")
            buildConfigField("String", "READER_AUTHORITY", "\"\"")
        }
        // A real shop: Android Keystore, the built-in HTTP gateway, Bluetooth readers.
        create("live") {
            dimension = "mode"
            buildConfigField("boolean", "DEMO_MODE", "false")
            buildConfigField("String", "GATEWAY_URL", "\"https://payments.example.com\"")
            // Hex of the reader maker's authority key (policy readerAuthorities).
            buildConfigField("String", "READER_AUTHORITY", "\"\"")
        }
    }

    buildFeatures {
        compose = true
        buildConfig = true
    }

    buildTypes {
        getByName("release") {
            isMinifyEnabled = true
            proguardFiles(getDefaultProguardFile("proguard-android-optimize.txt"), "proguard-rules.pro")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    sourceSets {
        getByName("main") {
            java.srcDirs("src/main/kotlin")
        }
    }
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    implementation(project(":model"))

    val composeBom = platform("androidx.compose:compose-bom:2024.12.01")
    implementation(composeBom)
    implementation("androidx.compose.material3:material3")
    implementation("androidx.compose.material:material-icons-core")
    implementation("androidx.compose.ui:ui")
    implementation("androidx.compose.ui:ui-tooling-preview")
    debugImplementation("androidx.compose.ui:ui-tooling")

    implementation("androidx.activity:activity-compose:1.9.3")
    implementation("androidx.lifecycle:lifecycle-runtime-compose:2.8.7")
    implementation("androidx.lifecycle:lifecycle-process:2.8.7")
    implementation("androidx.work:work-runtime-ktx:2.10.0")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.8.0")
}
